"""Reading CT volumes (and acquisition geometry from DICOM tags); writing volumes as NIfTI, NRRD or MHA.

CT volumes are read through MONAI's ``LoadImage`` (nibabel for NIfTI, ITK for DICOM series, NRRD
and MHA) as ``MetaTensor``s in HU whose affine maps voxel indices to RAS millimetres. Every
failure a user can fix raises :class:`~monai_gnerf.errors.VolumeError` with one sentence.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import ITKWriter, MetaTensor

from monai_gnerf.errors import GeometryError, VolumeError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.io.atomic import atomic_output_file
from monai_gnerf.io.readers import NIFTI_SUFFIXES, load_image

__all__ = ["check_slice_spacing", "check_volume_path", "load_ct", "dicom_series_files", "geometry_from_dicom", "save_volume"]

MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 50.0
HU_RANGE = (-32768.0, 65535.0)  # what any CT scale stores (int16 padding to uint16); metal is below 35,000 HU
_ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_SINGLE_FILE_ITK_SUFFIXES = (".nrrd", ".mha")


def _dicom_series(folder: Path) -> list[pydicom.Dataset]:
    """The headers (pixels not read) of the single DICOM series in ``folder``, each with its ``filename``.

    Raises:
        VolumeError: the folder holds no readable DICOM file, or more than one series.
    """
    series: dict[str, list[pydicom.Dataset]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError):
            continue
        series.setdefault(str(header.get("SeriesInstanceUID", "unknown")), []).append(header)
    if not series:
        raise VolumeError(f"no DICOM files found in folder {folder}")
    if len(series) > 1:
        sizes = ", ".join(f"{uid} ({len(headers)} files)" for uid, headers in series.items())
        raise VolumeError(f"folder {folder} mixes {len(series)} DICOM series: {sizes}; give one series per folder.")
    return next(iter(series.values()))


def dicom_series_files(folder: Path) -> list[Path]:
    """The files of the single DICOM series in ``folder``.

    Raises:
        VolumeError: the folder holds no readable DICOM file, or more than one series.
    """
    return [Path(header.filename) for header in _dicom_series(folder)]


def check_slice_spacing(headers: list[pydicom.Dataset], tolerance: float = 0.01) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a missing, duplicate or stray slice).

    Slice positions are ImagePositionPatient projected on the slice normal of
    ImageOrientationPatient; a series without those tags (or of fewer than three slices) is not
    checked.

    Args:
        headers: the series' headers (``pydicom.dcmread(..., stop_before_pixels=True)``).
        tolerance: allowed deviation of a gap from the median gap, as a fraction of it.

    Raises:
        VolumeError: naming the irregular gap and the regular spacing.
    """
    positions = []
    for header in headers:
        if "ImagePositionPatient" not in header or "ImageOrientationPatient" not in header:
            return
        row, col = np.asarray(header.ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
        positions.append(float(np.dot(np.cross(row, col), np.asarray(header.ImagePositionPatient, dtype=np.float64))))
    if len(positions) < 3:
        return
    gaps = np.diff(np.sort(positions))
    regular = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - regular) > tolerance * max(regular, 1e-6))
    if regular <= 0 or bad.size:
        where = int(bad[0]) if bad.size else 0
        raise VolumeError(
            f"DICOM series {Path(headers[0].filename).parent} is not evenly spaced: a {gaps[where]:.3g} mm gap after slice {where} "
            f"where the others are {regular:.3g} mm (a missing, duplicate or stray slice); give a complete series."
        )


def _check_no_gantry_tilt(headers: list[pydicom.Dataset], folder: Path, tolerance_deg: float = 0.5) -> None:
    """Refuse a series whose slices step off their normal (a tilted gantry): its voxels form a
    sheared grid, which a volume's affine (and ITK's reader, which keeps the normal) cannot hold.

    Raises:
        VolumeError: naming the tilt angle.
    """
    if len(headers) < 2 or any("ImagePositionPatient" not in h or "ImageOrientationPatient" not in h for h in headers):
        return
    row, col = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
    normal = np.cross(row, col)
    points = np.array([np.asarray(h.ImagePositionPatient, dtype=np.float64) for h in headers])
    ordered = points[np.argsort(points @ normal)]
    step = ordered[-1] - ordered[0]
    length = float(np.linalg.norm(step))
    if length == 0:
        return
    tilt_deg = math.degrees(math.acos(min(1.0, abs(float(step @ normal)) / (length * float(np.linalg.norm(normal))))))
    if tilt_deg > tolerance_deg:
        raise VolumeError(
            f"DICOM series {folder} has a gantry tilt of {tilt_deg:.1f} deg (its slices step off their normal); "
            "resample it to an untilted grid first (e.g. 3D Slicer's acquisition transform)."
        )


def _check_slice_grid(headers: list[pydicom.Dataset], folder: Path) -> None:
    """Refuse a DICOM series whose slices differ in size or lack a usable PixelSpacing (ITK would
    read the first as another series and the second as 1 mm).

    Raises:
        VolumeError: naming the sizes, or the file and its PixelSpacing.
    """
    sizes = sorted({(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for h in headers})
    if len(sizes) > 1:
        raise VolumeError(f"DICOM series {folder} has slices of different sizes (rows, columns) {sizes}; give one series.")
    for header in headers:
        if "PixelSpacing" not in header:
            raise VolumeError(f"{header.filename} has no PixelSpacing (0028,0030): the voxel size of a CT must be known.")
        spacing = [float(s) for s in header.PixelSpacing]
        if len(spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise VolumeError(
                f"{header.filename}: PixelSpacing (0028,0030) {spacing} is not a pixel spacing; "
                "the voxel size of a CT must be known."
            )


def _reader_for(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "ITKReader"
    if name.endswith(NIFTI_SUFFIXES):
        return "NibabelReader"
    if name.endswith(_ITK_SUFFIXES) or name.endswith(".dcm"):
        return "ITKReader"
    raise VolumeError(f"unsupported CT file type: {path.name} (use NIfTI, NRRD, MHA or a DICOM series folder).")


def _validate_ct(image: MetaTensor, path: Path) -> None:
    if image.ndim != 3:
        raise VolumeError(f"{path} is not a 3D volume: shape {tuple(image.shape)}.")
    if min(image.shape) < 2:
        raise VolumeError(f"{path} has fewer than 2 voxels along an axis: shape {tuple(image.shape)}.")
    if not torch.isfinite(image).all():
        raise VolumeError(f"{path} contains NaN or infinite voxel values.")
    low, high = float(image.min()), float(image.max())
    if low < HU_RANGE[0] or high > HU_RANGE[1]:
        raise VolumeError(f"{path} has voxel values from {low:.4g} to {high:.4g}, outside any CT's Hounsfield scale "
                          f"({HU_RANGE[0]:g} to {HU_RANGE[1]:g} HU); a CT must be given in HU.")  # fmt: skip
    spacing = torch.linalg.vector_norm(image.affine[:3, :3], dim=0)
    if not ((spacing >= MIN_SPACING_MM) & (spacing <= MAX_SPACING_MM)).all():
        raise VolumeError(
            f"{path} has an absurd voxel spacing {[round(float(s), 4) for s in spacing]} mm "
            f"(expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm)."
        )


def load_ct(path: str | Path, what: str = "CT") -> MetaTensor:
    """Load a CT volume in HU with its RAS affine.

    Args:
        path: a NIfTI/NRRD/MHA file or a folder holding one DICOM series.
        what: what the volume is, for messages (e.g. ``"mask"`` for a support mask).

    Returns:
        ``MetaTensor`` of shape ``(I, J, K)``, float32 HU, ``.affine`` voxel index -> RAS mm.

    Raises:
        VolumeError: missing path, empty or mixed DICOM folder, unreadable file, not 3D,
            NaN/inf voxels, or absurd spacing.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{what} not found: {path}")
    if path.is_dir():
        headers = _dicom_series(path)
        _check_slice_grid(headers, path)
        _check_no_gantry_tilt(headers, path)
        check_slice_spacing(headers)  # one regular series, or a clear error; ITK then reads it
    image = load_image(path, _reader_for(path), what, VolumeError)
    image = image.squeeze() if image.ndim > 3 else image
    _validate_ct(image, path)
    return image


def geometry_from_dicom(path: str | Path, base: ProjectionGeometry) -> ProjectionGeometry:
    """Override a geometry's distances and pixel spacing with DICOM tags, where present.

    Reads DistanceSourceToDetector (0018,1110), DistanceSourceToPatient (0018,1111) and
    ImagerPixelSpacing (0018,1164) from a DICOM file (or the first file of a series folder), as
    MedNeRF did; absent tags keep the ``base`` values.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"DICOM not found: {path}")
    first = dicom_series_files(path)[0] if path.is_dir() else path
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError) as err:
        raise VolumeError(f"could not read DICOM header of {first}: {err}") from None
    changes: dict[str, object] = {}
    if "DistanceSourceToDetector" in ds:
        changes["source_to_detector_mm"] = float(ds.DistanceSourceToDetector)
    if "DistanceSourceToPatient" in ds:
        changes["source_to_isocenter_mm"] = float(ds.DistanceSourceToPatient)
    if "ImagerPixelSpacing" in ds:
        changes["pixel_spacing_mm"] = tuple(float(s) for s in ds.ImagerPixelSpacing)
    if changes and base.beam == "parallel":
        raise GeometryError("DICOM source distances describe a cone beam; use a cone-beam base geometry.")
    return replace(base, **changes)


def save_volume(path: str | Path, volume: torch.Tensor, affine: torch.Tensor, dtype: type = np.float32) -> Path:
    """Write a volume with its RAS affine (it overlays its source in any viewer), atomically.

    The suffix chooses the format: ``.nii`` / ``.nii.gz`` (NIfTI, nibabel), ``.nrrd`` or ``.mha``
    (MONAI's ``ITKWriter``, which stores the affine in ITK's LPS convention; readers turn it back
    into the same RAS affine). Other suffixes are refused (``.nhdr`` and ``.mhd`` would write a
    second data file, which cannot be renamed into place atomically with its header).

    Raises:
        VolumeError: an unknown suffix.
    """
    path = check_volume_path(path)
    array = volume.detach().cpu().numpy().astype(dtype)
    affine = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu())
    if path.name.endswith(NIFTI_SUFFIXES):
        image = nib.Nifti1Image(array, affine)
        image.header.set_xyzt_units("mm")
        with atomic_output_file(path) as tmp:
            nib.save(image, tmp)
        return path
    writer = ITKWriter(output_dtype=dtype, affine_lps_to_ras=True)
    writer.set_data_array(array, channel_dim=None)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    with atomic_output_file(path) as tmp:
        writer.write(str(tmp), compression=True)
    return path


def check_volume_path(path: str | Path) -> Path:
    """``path`` if :func:`save_volume` can write its format (checked before the work that makes the volume).

    Raises:
        VolumeError: an unknown suffix, or a name that is only a suffix (``.nii.gz``).
    """
    path = Path(path)
    name = path.name.lower()
    if name in (*NIFTI_SUFFIXES, *_SINGLE_FILE_ITK_SUFFIXES):
        raise VolumeError(f"cannot write a volume as {path.name}: the name is only a suffix; give a name before it.")
    if name.endswith(NIFTI_SUFFIXES) or path.suffix.lower() in _SINGLE_FILE_ITK_SUFFIXES:
        return path
    raise VolumeError(f"cannot write a volume as {path.name}: use .nii.gz, .nii, .nrrd or .mha.")
