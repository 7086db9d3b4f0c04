"""Real X-ray input: DICOM DX tags, PNG projection folders, physical resampling onto a model detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dicom_utils import write_dx

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import load_geometry
from monai_gnerf.io import XRayImage, load_xray, save_projections, to_model_detector

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


UNUSABLE_SPACINGS = [
    {"PixelSpacing": [0, 0]}, {"ImagerPixelSpacing": [0.0, 0.0]}, {},
    {"ImagerPixelSpacing": 0.2},  # one value where DICOM asks for two
    {"ImagerPixelSpacing": [1e-6, 1e-6]}, {"PixelSpacing": [1e6, 1e6]},  # an image 80 um or 80 km wide
    {"PixelSpacing": ["9.9", "9.9"], "patch": (b"9.9\\9.9", b"abc\\xyz")},  # not numbers (bytes patched after writing)
]  # fmt: skip


@pytest.mark.parametrize("spacing_tags", UNUSABLE_SPACINGS)
def test_zero_or_missing_spacing_warns_and_fits_the_silhouette(tmp_path, caplog, spacing_tags):
    # a 40-pixel-wide bright body in an 80-pixel image, no usable spacing
    pixels = np.zeros((60, 80), dtype=np.uint16)
    pixels[10:50, 25:65] = 3000
    tags = dict(spacing_tags)
    patch = tags.pop("patch", None)
    write_dx(tmp_path / "cr.dcm", pixels, **tags)
    if patch:
        raw = (tmp_path / "cr.dcm").read_bytes()
        assert raw.count(patch[0]) == 1
        (tmp_path / "cr.dcm").write_bytes(raw.replace(*patch))
    with caplog.at_level("WARNING"):
        xray = load_xray(tmp_path / "cr.dcm")
    assert ("is not a pixel spacing (" in caplog.text) == bool(tags)
    assert xray.pixel_spacing_mm is None
    model = load_geometry("mednerf_chest").with_detector_shape(32, 32).resolved((0, 0, 0))
    with caplog.at_level("WARNING"):
        view = to_model_detector(xray, model, reference_max=2.0, silhouette_width_fraction=0.5)
    assert "no pixel spacing; estimated" in caplog.text
    columns = torch.nonzero(view.max(dim=0).values > 1.0).flatten()
    assert (int(columns[0]), int(columns[-1])) == (8, 23)  # 16 of 32 columns, centred


def test_explicit_spacing_overrides_a_missing_one(tmp_path):
    pixels = np.zeros((60, 80), dtype=np.uint16)
    pixels[10:50, 25:65] = 3000
    write_dx(tmp_path / "cr.dcm", pixels, PixelSpacing=[0, 0])
    model = load_geometry("mednerf_chest").with_detector_shape(32, 32).resolved((0, 0, 0))
    iso_mm = model.pixel_spacing_mm[1] / model.magnification
    xray = load_xray(tmp_path / "cr.dcm").with_pixel_spacing(iso_mm * model.magnification / 2.0)
    view = to_model_detector(xray, model, reference_max=2.0)  # 40 source pixels = 20 model pixels
    columns = torch.nonzero(view.max(dim=0).values > 1.0).flatten()
    assert int(columns[-1] - columns[0]) + 1 == 20
    for absurd in (0.0, 1e-6, 1e6, float("nan")):
        with pytest.raises(GnerfInputError, match=r"pixel_spacing_mm .* is not this X-ray's pixel size: "):
            xray.with_pixel_spacing(absurd)


def test_silhouette_is_centred_on_the_detector():
    values = torch.zeros(64, 64)
    values[5:25, 30:60] = 1.0  # body off to the lower right
    xray = XRayImage(values, False, (1.0, 1.0), None, None, "off-centre")
    model = load_geometry("mednerf_chest").with_detector_shape(64, 64).resolved((0, 0, 0))
    xray.pixel_spacing_mm = (model.pixel_spacing_mm[0],) * 2  # same pixel at the isocenter as the model
    xray.source_to_detector_mm, xray.source_to_isocenter_mm = model.source_to_detector_mm, model.source_to_isocenter_mm
    view = to_model_detector(xray, model, reference_max=1.0)
    rows, cols = torch.nonzero(view > 0.5, as_tuple=True)
    assert float(rows.float().mean()) == pytest.approx(31.5, abs=0.6)
    assert float(cols.float().mean()) == pytest.approx(31.5, abs=0.6)
    kept = to_model_detector(xray, model, reference_max=1.0, centre_silhouette=False)
    assert float(torch.nonzero(kept > 0.5)[:, 1].float().mean()) == pytest.approx(44.5, abs=0.6)


def test_presentation_lut_and_monochrome1_invert_exactly_once(tmp_path):
    pixels = np.tile(np.arange(20, dtype=np.uint16) * 100, (10, 1))
    plain = load_xray(_dx(tmp_path, "m2.dcm", pixels)).values
    inverse_shape = load_xray(_dx(tmp_path, "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1",
                                  PresentationLUTShape="INVERSE")).values  # fmt: skip
    monochrome1 = load_xray(_dx(tmp_path, "m1b.dcm", pixels, PhotometricInterpretation="MONOCHROME1")).values
    assert torch.equal(inverse_shape, monochrome1)  # the LUT inverts; MONOCHROME1 is not inverted again
    assert torch.equal(inverse_shape, plain.max() - plain)
    identity = load_xray(_dx(tmp_path, "m2i.dcm", pixels, PresentationLUTShape="IDENTITY")).values
    assert torch.equal(identity, plain)


def test_an_unknown_presentation_lut_shape_is_left_out_with_a_warning(tmp_path, caplog):
    """A shape DICOM does not define: read without it, so MONOCHROME1 is still inverted (once)."""
    pixels = np.tile(np.arange(20, dtype=np.uint16) * 100, (10, 1))
    with caplog.at_level("WARNING"):
        values = load_xray(_dx(tmp_path, "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1",
                               PresentationLUTShape="BOGUS")).values  # fmt: skip
    assert "its Presentation LUT is unusable" in caplog.text and "BOGUS" in caplog.text
    assert torch.equal(values, torch.from_numpy(pixels.max() - pixels.astype(np.float32)))


def _dx(folder, name, pixels, **tags):
    write_dx(folder / name, pixels, **tags)
    return folder / name


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_image_files_go_through_load_image_with_their_spacing(tmp_path, suffix):
    import itk

    pixels = np.arange(12 * 20, dtype=np.float32).reshape(12, 20)  # (rows, cols)
    image = itk.image_from_array(pixels[None] if suffix == ".nii.gz" else pixels)  # one-slice NIfTI, 2D others
    image.SetSpacing([0.3, 0.2, 1.0] if suffix == ".nii.gz" else [0.3, 0.2])  # ITK spacing is (x=col, y=row)
    itk.imwrite(image, str(tmp_path / f"xray{suffix}"))
    xray = load_xray(tmp_path / f"xray{suffix}")
    assert tuple(xray.values.shape) == (12, 20)
    assert torch.equal(xray.values, torch.from_numpy(pixels))
    assert xray.pixel_spacing_mm == pytest.approx((0.2, 0.3))
    assert not xray.is_line_integral


def test_a_constant_image_is_one_clear_error(tmp_path):
    write_dx(tmp_path / "flat.dcm", np.full((8, 8), 7, dtype=np.uint16))
    with pytest.raises(GnerfInputError, match="constant image"):
        load_xray(tmp_path / "flat.dcm")


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
def test_plain_png_reads_as_rows_and_columns_without_spacing(tmp_path, mode):
    from PIL import Image

    pixels = (np.arange(12 * 20).reshape(12, 20) % 200).astype(np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(pixels) if mode != "RGB" else Image.fromarray(np.stack([pixels] * 3, -1))
    image.save(tmp_path / "cxr.png")
    xray = load_xray(tmp_path / "cxr.png")
    assert tuple(xray.values.shape) == (12, 20) and xray.pixel_spacing_mm is None and not xray.is_line_integral
    assert torch.allclose(xray.values, torch.from_numpy(pixels.astype(np.float32)))


@pytest.mark.parametrize("suffix,mode", [(".jpg", "L"), (".jpg", "RGB"), (".tif", "L")])
def test_jpeg_and_tiff_read_like_plain_png(tmp_path, suffix, mode):
    from PIL import Image

    pixels = np.add.outer(np.arange(24) * 4, np.arange(40) * 3).astype(np.uint8)  # smooth: JPEG keeps it closely
    Image.fromarray(pixels if mode == "L" else np.stack([pixels] * 3, -1)).save(tmp_path / f"cxr{suffix}")
    xray = load_xray(tmp_path / f"cxr{suffix}")
    assert tuple(xray.values.shape) == (24, 40) and xray.pixel_spacing_mm is None and not xray.is_line_integral
    assert (xray.values - torch.from_numpy(pixels.astype(np.float32))).abs().mean() < (2.0 if suffix == ".jpg" else 1e-6)


def test_an_unusable_voi_window_is_left_out_with_a_warning(tmp_path, caplog):
    pixels = np.tile(np.arange(0, 4000, 200, dtype=np.uint16), (4, 1))
    write_dx(tmp_path / "dx.dcm", pixels, WindowCenter=2000, WindowWidth=0, PixelSpacing=[0.5, 0.5])
    with caplog.at_level("WARNING"):
        values = load_xray(tmp_path / "dx.dcm").values
    assert torch.equal(values, torch.from_numpy(pixels).float())  # modality LUT only (identity here)
    assert "its VOI LUT is unusable" in caplog.text and "Window Width" in caplog.text


def test_an_image_format_not_read_here_is_named_not_reported_as_broken_dicom(tmp_path):
    (tmp_path / "chest.gif").write_bytes(b"GIF89a" + bytes(32))
    with pytest.raises(GnerfInputError, match=r"chest.gif: .gif is not an X-ray format read here \(DICOM, NRRD"):
        load_xray(tmp_path / "chest.gif")
    (tmp_path / "1.2.840.10008.99").write_bytes(b"not a dicom")  # named by its UID: a broken DICOM file
    with pytest.raises(GnerfInputError, match="could not read DICOM X-ray"):
        load_xray(tmp_path / "1.2.840.10008.99")


def test_voi_lut_tables_are_indexed_by_integers_and_a_broken_one_is_left_out(tmp_path, caplog):
    from pydicom.dataset import Dataset

    pixels = np.tile(np.arange(0, 4000, 200, dtype=np.uint16), (4, 1))
    table = Dataset()
    table.add_new(0x00283002, "US", [4096, 0, 16])  # LUTDescriptor
    table.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # LUTData: an inverting table
    write_dx(tmp_path / "dx.dcm", pixels, VOILUTSequence=[table], PixelSpacing=[0.5, 0.5])
    with caplog.at_level("WARNING"):
        values = load_xray(tmp_path / "dx.dcm").values
    assert torch.equal(values, torch.from_numpy(4095.0 - pixels.astype(np.float32)))
    assert caplog.text == ""  # no "VOI LUT on a float input array" warning
    table.add_new(0x00283006, "OW", b"\x00\x01" * 10)  # 10 entries where the descriptor promises 4096
    write_dx(tmp_path / "broken.dcm", pixels, VOILUTSequence=[table], PixelSpacing=[0.5, 0.5])
    with caplog.at_level("WARNING"):
        values = load_xray(tmp_path / "broken.dcm").values
    assert torch.equal(values, torch.from_numpy(pixels).float()) and "its VOI LUT is unusable" in caplog.text


@pytest.mark.parametrize("photometric", ["PALETTE COLOR", "RGB"])
def test_a_colour_dicom_is_not_read_as_a_radiograph(tmp_path, photometric):
    write_dx(tmp_path / "dx.dcm", np.zeros((8, 8)), PhotometricInterpretation=photometric, PixelSpacing=[0.5, 0.5])
    with pytest.raises(GnerfInputError, match=f"has PhotometricInterpretation {photometric}; a radiograph is grayscale"):
        load_xray(tmp_path / "dx.dcm")
