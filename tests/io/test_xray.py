"""Real X-ray input: DICOM DX tags, PNG projection folders, physical resampling onto a model detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import load_geometry
from monai_gnerf.io import XRayImage, load_xray, save_projections, to_model_detector

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dx(path, pixels: np.ndarray, **tags) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = tags.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_dx_rescale_monochrome1_and_distances(tmp_path):
    pixels = np.tile(np.arange(20, dtype=np.uint16) * 100, (10, 1))
    write_dx(tmp_path / "dx.dcm", pixels, PhotometricInterpretation="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-50,
             ImagerPixelSpacing=[0.2, 0.3], DistanceSourceToDetector=1100.0, DistanceSourceToPatient=1000.0)  # fmt: skip
    xray = load_xray(tmp_path / "dx.dcm")
    rescaled = pixels * 2.0 - 50.0
    assert torch.allclose(xray.values, torch.from_numpy(rescaled.max() - rescaled).float())  # inverted: dense is bright
    assert xray.pixel_spacing_mm == (0.2, 0.3)
    assert (xray.source_to_detector_mm, xray.source_to_isocenter_mm) == (1100.0, 1000.0)
    assert not xray.is_line_integral


def test_dicom_voi_window_is_applied(tmp_path):
    pixels = np.tile(np.arange(0, 4000, 200, dtype=np.uint16), (4, 1))
    write_dx(tmp_path / "dx.dcm", pixels, WindowCenter=2000, WindowWidth=1000, PixelSpacing=[0.5, 0.5])
    values = load_xray(tmp_path / "dx.dcm").values
    assert values[0, 0] == values[0, 5] and values[0, -1] == values[0, -5]  # clipped outside the window
    assert values[0, 9] < values[0, 10] < values[0, 11]  # linear inside it
    assert not torch.equal(values, torch.from_numpy(pixels).float())


def test_png_in_a_projection_folder_reads_back_line_integrals(tmp_path):
    geometry = load_geometry("mednerf_chest").with_detector_shape(32, 32).with_uniform_angles(2).resolved((0, 0, 0))
    truth = torch.rand(2, 32, 32) * 3.0
    save_projections(tmp_path / "p", truth, geometry)
    xray = load_xray(tmp_path / "p" / "png" / "view_001.png")
    assert xray.is_line_integral and xray.pixel_spacing_mm == geometry.pixel_spacing_mm
    assert torch.allclose(xray.values, truth[1], atol=3.0 / 65535)
    model_view = to_model_detector(xray, geometry, reference_max=1.0)
    assert torch.allclose(model_view, truth[1], atol=1e-3)


def test_resampling_keeps_physical_size(tmp_path):
    # a disk of radius 60 mm at the isocenter, imaged at 0.5 mm pixels with magnification 1.2
    model = load_geometry("mednerf_chest").with_detector_shape(64, 64).resolved((0, 0, 0))
    n, pixel_mm, sdd, sad = 600, 0.5, 1200.0, 1000.0
    centre = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n]
    radius_detector_mm = 60.0 * sdd / sad
    disk = ((np.hypot(yy - centre, xx - centre) * pixel_mm) < radius_detector_mm).astype(np.float32)
    xray = XRayImage(torch.from_numpy(disk), False, (pixel_mm, pixel_mm), sdd, sad, "disk")
    on_model = to_model_detector(xray, model, reference_max=2.0)
    pixel_at_iso = model.pixel_spacing_mm[0] / model.magnification
    area_mm2 = float((on_model / 2.0).sum()) * pixel_at_iso**2
    assert area_mm2 == pytest.approx(np.pi * 60.0**2, rel=0.03)
    assert on_model.max() == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("content", [b"not a dicom", b""])
def test_corrupt_or_missing_xray_is_one_clear_error(tmp_path, content):
    (tmp_path / "bad.dcm").write_bytes(content)
    with pytest.raises(GnerfInputError, match="could not read DICOM X-ray"):
        load_xray(tmp_path / "bad.dcm")
    with pytest.raises(GnerfInputError, match="X-ray file not found"):
        load_xray(tmp_path / "missing.dcm")
