"""MONAI ``LoadImage`` with exactly the reader a file's type calls for, and NIfTI header checks.

``LoadImage(reader=...)`` falls back to MONAI's other readers when the named one fails, so a
truncated NIfTI could be "read" by ITK into uninitialised memory; here the reader is passed at
call time, which MONAI uses alone. NIfTI headers are checked before reading: nibabel silently
replaces a zero voxel size by 1 mm and would read a complex volume as its real part.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from monai.data import ITKReader, NibabelReader
from monai.data.meta_tensor import MetaTensor
from monai.transforms import LoadImage

from monai_gnerf.errors import GnerfInputError, first_line

__all__ = ["NIFTI_SUFFIXES", "load_image"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_READERS = {"NibabelReader": NibabelReader, "ITKReader": ITKReader}
_NIFTI1_HEADER_BYTES = 348
_GPU_DICOM_PLUGIN_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"


def _load_image_transform() -> LoadImage:
    """``LoadImage`` built quietly: it instantiates every MONAI reader as a fallback, and the GPU DICOM
    reader's warnings that nvImageCodec is absent (always so on a CPU) would precede every message."""
    plugin_logger = logging.getLogger(_GPU_DICOM_PLUGIN_LOGGER)
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImage(image_only=True, dtype=np.float32)
    finally:
        plugin_logger.setLevel(level)


def _check_nifti_header(path: Path, what: str, error: type[GnerfInputError]) -> None:
    try:
        with ImageOpener(path) as handle:  # the header as written: nib.load would mend a zero voxel size
            header = nib.Nifti1Header.from_fileobj(handle, check=False)
        if int(header["sizeof_hdr"]) != _NIFTI1_HEADER_BYTES:
            header = nib.load(path).header  # NIfTI-2
        dtype = header.get_data_dtype()
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a broken file
        raise error(f"could not read {what} {path}: {first_line(err)}") from None
    if dtype.kind == "c":
        raise error(f"{path} holds complex values ({dtype}); a {what} must be real.")
    spatial = max(1, min(3, int(header["dim"][0])))
    pixdim = [float(p) for p in header["pixdim"][1 : 1 + spatial]]
    if not all(np.isfinite(p) and p > 0 for p in pixdim):
        raise error(f"{path} has a voxel spacing of {pixdim} mm in its header; sizes must be positive.")


def load_image(path: str | Path, reader: str, what: str, error: type[GnerfInputError] = GnerfInputError) -> MetaTensor:
    """Read an image with ``LoadImage`` and the one reader ``reader`` (float32, affine in its meta).

    Args:
        path: the file (or a DICOM series folder for ``"ITKReader"``).
        reader: ``"NibabelReader"`` or ``"ITKReader"``.
        what: what the file should be, for messages (``"CT"``, ``"X-ray image"``).
        error: the exception class of the messages.

    Raises:
        ``error``: a header that makes no sense, or a file the reader cannot read (one line).
    """
    path = Path(path)
    if reader == "NibabelReader":
        _check_nifti_header(path, what, error)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # values too large for float32 become inf: refused by name later
            return _load_image_transform()(str(path), reader=_READERS[reader]())
    except Exception as err:  # noqa: BLE001 - readers raise many types; the user needs the file and the reason
        raise error(f"could not read {what} {path}: {first_line(err)}") from None
