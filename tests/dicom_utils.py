"""Write small synthetic DICOM files for tests (CT series, DX radiographs; pydicom only, no external data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 2.0),
    origin_mm: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    series_uid: str | None = None,
    extra_tags: dict[str, object] | None = None,
) -> list[Path]:
    """Write ``hu`` (slices, rows, cols) as an axial CT series in LPS patient coordinates."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    paths = []
    for k, plane in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{series_uid[-6:]}_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.PatientID = "CT", "PHANTOM"
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing = [spacing_mm[1], spacing_mm[0]]  # row spacing, column spacing
        ds.SliceThickness = spacing_mm[2]
        ds.ImagePositionPatient = [origin_mm[0], origin_mm[1], origin_mm[2] + k * spacing_mm[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        for key, value in (extra_tags or {}).items():
            setattr(ds, key, value)
        ds.PixelData = plane.astype(np.int16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dx(path, pixels: np.ndarray, **tags) -> None:
    """Write a 16-bit DX radiograph with the given DICOM attributes (keywords as in pydicom)."""
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
