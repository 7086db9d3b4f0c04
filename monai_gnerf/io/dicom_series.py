"""Writing a volume as a DICOM CT series (pydicom), with the source study's identifiers.

A reconstruction written this way loads into a PACS or 3D Slicer's DICOM browser beside the
study it came from: when the source CT was a DICOM series, its patient and study identifiers
(:data:`DICOM_IDENTIFIERS`, recorded by :func:`dicom_identifiers`) are copied and the new series
gets its own Series and SOP Instance UIDs in the same Study and Frame of Reference. Each slice is
one CT Image Storage file: signed 16-bit HU (RescaleSlope 1, RescaleIntercept 0), positions and
orientation in DICOM's LPS patient frame from the volume's RAS affine, columns along the
volume's first array axis and rows along its second.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import pydicom.errors
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_gnerf.errors import VolumeError
from monai_gnerf.io.atomic import atomic_output_dir

__all__ = ["DICOM_IDENTIFIERS", "dicom_identifiers", "dicom_identifiers_of_file", "save_dicom_series"]

DICOM_IDENTIFIERS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
)
"""The patient and study attributes a derived series shares with its source (JSON-ready strings)."""
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_HU_RANGE = (-32768, 32767)


def dicom_identifiers(header: pydicom.Dataset) -> dict[str, str]:
    """The :data:`DICOM_IDENTIFIERS` a DICOM header has, as strings (absent ones are left out)."""
    return {key: str(header.get(key)) for key in DICOM_IDENTIFIERS if header.get(key) not in (None, "")}


def dicom_identifiers_of_file(path: str | Path) -> dict[str, str] | None:
    """The :data:`DICOM_IDENTIFIERS` of a DICOM file (a DX/CR radiograph, say), or ``None`` for another format."""
    try:
        return dicom_identifiers(pydicom.dcmread(path, stop_before_pixels=True))
    except (pydicom.errors.InvalidDicomError, OSError, IsADirectoryError):
        return None


def _slice_dataset(identifiers: dict[str, str], series_uid: str, description: str, number: int) -> pydicom.Dataset:
    """A CT slice's header without geometry or pixels: identifiers, UIDs, the series' description."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    now = datetime.datetime.now()
    for key in DICOM_IDENTIFIERS:
        setattr(ds, key, identifiers.get(key, ""))
    ds.StudyInstanceUID = identifiers.get("StudyInstanceUID") or series_uid.rsplit(".", 1)[0] + ".1"
    ds.FrameOfReferenceUID = identifiers.get("FrameOfReferenceUID") or ds.StudyInstanceUID + ".1"
    ds.StudyDate = identifiers.get("StudyDate") or now.strftime("%Y%m%d")
    ds.StudyTime = identifiers.get("StudyTime") or now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 9001, number
    ds.Modality, ds.SeriesDescription, ds.ImageType = "CT", description, ["DERIVED", "SECONDARY"]
    ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer, ds.PositionReferenceIndicator = "monai-gnerf", ""
    return ds


def save_dicom_series(
    folder: str | Path,
    volume_hu: torch.Tensor,
    affine: torch.Tensor,
    identifiers: dict[str, str] | None = None,
    description: str = "monai-gnerf reconstruction",
) -> Path:
    """Write a volume in HU as a DICOM CT series, one file per slice along its third array axis.

    Args:
        folder: the series folder (written atomically: all files or none).
        volume_hu: ``(I, J, K)`` attenuation in HU (rounded to integers, clipped to int16).
        affine: voxel index -> RAS millimetres.
        identifiers: the source's patient/study attributes (:func:`dicom_identifiers`); without
            them the series gets a new study with empty patient attributes.
        description: the SeriesDescription.

    Returns:
        The folder, holding ``slice_0000.dcm`` ...

    Raises:
        VolumeError: a volume that is not 3D.
    """
    if volume_hu.ndim != 3:
        raise VolumeError(f"a DICOM series needs a 3D volume, got shape {tuple(volume_hu.shape)}.")
    values = np.clip(np.rint(volume_hu.detach().cpu().double().numpy()), *_HU_RANGE).astype(np.int16)
    lps = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu())[:3]
    lps = np.concatenate([_RAS_TO_LPS @ lps[:, :3], (_RAS_TO_LPS @ lps[:, 3])[:, None]], axis=1)
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    orientation = np.concatenate([lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]])
    series_uid = generate_uid()
    with atomic_output_dir(folder) as staging:
        for k in range(values.shape[2]):
            ds = _slice_dataset(identifiers or {}, series_uid, description, k + 1)
            ds.ImagePositionPatient = [float(v) for v in lps[:, 3] + k * lps[:, 2]]
            ds.ImageOrientationPatient = [float(v) for v in orientation]
            ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows (J), between columns (I)
            ds.SliceThickness = float(spacing[2])
            ds.Rows, ds.Columns = values.shape[1], values.shape[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
            ds.PixelData = np.ascontiguousarray(values[:, :, k].T).tobytes()
            ds.save_as(staging / f"slice_{k:04d}.dcm", enforce_file_format=True)
    return Path(folder)
