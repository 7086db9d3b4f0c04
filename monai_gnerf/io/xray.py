"""Real X-ray input: read radiographs and bring them to a model's detector in the line-integral domain.

Radiographs are not DRRs. :func:`load_xray` reads

* DICOM DX/CR/RF/XA: the modality LUT (RescaleSlope/Intercept) and the VOI LUT (window or LUT
  sequence) are applied, MONOCHROME1 is inverted so attenuation is bright, and ImagerPixelSpacing
  (detector plane; PixelSpacing as a fallback), DistanceSourceToDetector and
  DistanceSourceToPatient are kept;
* 8/16-bit PNG: display values; a PNG inside a monai-gnerf projection folder
  (``<folder>/png/view_NNN.png`` with ``<folder>/projections.json``) is read back as exact line
  integrals with the folder's geometry;
* a 2D or one-slice NIfTI/NRRD image (e.g. exported from 3D Slicer), with its pixel spacing.

:func:`to_model_detector` then resamples the image so one pixel covers the model's pixel size
*at the isocenter* (magnifications differ between systems), centre-crops or pads it to the
model's detector, and maps display values to line integrals (bright = attenuating).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io.projections import read_png16

__all__ = ["XRayImage", "load_xray", "to_model_detector"]

_LOGGER = logging.getLogger(__name__)


@dataclass
class XRayImage:
    """One radiograph with what is known of its acquisition.

    Attributes:
        values: ``(rows, cols)`` float32; bright = attenuating.
        is_line_integral: ``True`` when ``values`` are exact line integrals (our own DRRs);
            ``False`` for display values with an unknown scale.
        pixel_spacing_mm: ``(row, col)`` pixel pitch at the detector, or ``None`` if unknown.
        source_to_detector_mm: SDD, mm, or ``None``.
        source_to_isocenter_mm: SAD (DICOM DistanceSourceToPatient), mm, or ``None``.
        source: file the image came from.
    """

    values: torch.Tensor
    is_line_integral: bool
    pixel_spacing_mm: tuple[float, float] | None
    source_to_detector_mm: float | None
    source_to_isocenter_mm: float | None
    source: str


def _dicom_xray(path: Path, apply_voi: bool) -> XRayImage:
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - corrupt files raise many types; one message for all
        raise GnerfInputError(
            f"could not read DICOM X-ray {path}: {str(err).splitlines()[0] if str(err) else err!r}"
        ) from None
    if pixels.ndim != 2:
        raise GnerfInputError(f"{path} holds a {pixels.ndim}D image; a radiograph must be one 2D frame.")
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = apply_voi_lut(values, ds).astype(np.float64)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        values = values.max() - values  # MONOCHROME1 shows attenuation dark: invert
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    return XRayImage(
        values=torch.from_numpy(values.astype(np.float32)),
        is_line_integral=False,
        pixel_spacing_mm=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        source_to_detector_mm=float(ds.DistanceSourceToDetector) if "DistanceSourceToDetector" in ds else None,
        source_to_isocenter_mm=float(ds.DistanceSourceToPatient) if "DistanceSourceToPatient" in ds else None,
        source=str(path),
    )


def _png_xray(path: Path) -> XRayImage:
    folder = path.parent.parent
    meta_path = folder / "projections.json"
    if path.parent.name == "png" and meta_path.is_file() and (folder / "geometry.json").is_file():
        meta = json.loads(meta_path.read_text())
        geometry = load_geometry(folder / "geometry.json")
        values = read_png16(path, float(meta["png_full_scale"]))
        return XRayImage(
            torch.from_numpy(values), True, geometry.pixel_spacing_mm, geometry.source_to_detector_mm,
            geometry.source_to_isocenter_mm, str(path),
        )  # fmt: skip
    try:
        values = read_png16(path)
    except OSError as err:
        raise GnerfInputError(f"could not read PNG X-ray {path}: {err}") from None
    return XRayImage(torch.from_numpy(values), False, None, None, None, str(path))


def _volume_xray(path: Path) -> XRayImage:
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # noqa: BLE001
        raise GnerfInputError(f"could not read X-ray image {path}: {err}") from None
    squeezed = np.squeeze(data)
    if squeezed.ndim != 2:
        raise GnerfInputError(f"{path} has shape {data.shape}; an X-ray must be a 2D (or one-slice) image.")
    spacing = [float(s) for s, n in zip(image.header.get_zooms(), data.shape) if n > 1][:2]
    # NIfTI arrays are (cols, rows) for radiographs exported as one-slice volumes
    return XRayImage(
        torch.from_numpy(np.ascontiguousarray(squeezed.T)), False, (spacing[1], spacing[0]), None, None, str(path)
    )


def load_xray(path: str | Path, apply_voi_lut: bool = True) -> XRayImage:
    """Read a radiograph (DICOM, PNG, or 2D/one-slice NIfTI); see the module docstring.

    Raises:
        GnerfInputError: missing or unreadable file, not 2D, or NaN values.
    """
    path = Path(path)
    if not path.is_file():
        raise GnerfInputError(f"X-ray file not found: {path}")
    name = path.name.lower()
    if name.endswith(".png"):
        xray = _png_xray(path)
    elif name.endswith((".nii", ".nii.gz")):
        xray = _volume_xray(path)
    else:
        xray = _dicom_xray(path, apply_voi_lut)
    if not torch.isfinite(xray.values).all():
        raise GnerfInputError(f"{path} contains NaN or infinite pixel values.")
    return xray


def _pixel_at_isocenter_mm(spacing_mm: float, sdd_mm: float | None, sad_mm: float | None) -> float:
    if sdd_mm is None or sad_mm is None:
        return spacing_mm
    return spacing_mm * sad_mm / sdd_mm


def to_model_detector(xray: XRayImage, geometry: ProjectionGeometry, reference_max: float) -> torch.Tensor:
    """Resample an X-ray onto the model's detector, in line integrals ``(rows, cols)``.

    Args:
        xray: the radiograph.
        geometry: the model's acquisition (its detector and magnification).
        reference_max: line integral to map the image's 99.5th percentile to, for display-valued
            images (e.g. the training data's typical maximum); exact line integrals are kept.

    Pixels outside the radiograph become 0 (air).
    """
    values = xray.values.float()
    rows, cols = geometry.detector_shape
    model_iso = [s / geometry.magnification for s in geometry.pixel_spacing_mm]
    if xray.pixel_spacing_mm is None:
        _LOGGER.warning(f"{xray.source}: no pixel spacing; assuming it spans the model's detector.")
        src_iso = [m * n / s for m, n, s in zip(model_iso, (rows, cols), values.shape)]
    else:
        sdd = xray.source_to_detector_mm or geometry.source_to_detector_mm
        sad = xray.source_to_isocenter_mm or geometry.source_to_isocenter_mm
        src_iso = [_pixel_at_isocenter_mm(s, sdd, sad) for s in xray.pixel_spacing_mm]
    factor = max(1, int(min(m / s for m, s in zip(model_iso, src_iso))))
    image = F.avg_pool2d(values[None, None], factor) if factor > 1 else values[None, None]
    src_iso = [s * factor for s in src_iso]
    axes = []
    for n_out, n_in, out_mm, in_mm in zip((rows, cols), image.shape[-2:], model_iso, src_iso):
        position = (torch.arange(n_out, dtype=torch.float32) - (n_out - 1) / 2.0) * out_mm / in_mm + (n_in - 1) / 2.0
        axes.append((position + 0.5) / n_in * 2.0 - 1.0)
    grid = torch.stack(torch.meshgrid(axes[1], axes[0], indexing="xy"), dim=-1)[None]
    resampled = F.grid_sample(image, grid, align_corners=False, padding_mode="zeros")[0, 0]
    if xray.is_line_integral:
        return resampled.clamp(min=0.0)
    low, high = torch.quantile(values.flatten()[:: max(1, values.numel() // 100_000)], torch.tensor([0.005, 0.995]))
    scale = (high - low).clamp(min=1e-12)
    inside = F.grid_sample(torch.ones_like(image), grid, align_corners=False, padding_mode="zeros")[0, 0]
    return ((resampled - low * inside) / scale).clamp(min=0.0) * reference_max
