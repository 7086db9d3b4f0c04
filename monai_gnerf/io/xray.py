"""Real X-ray input: one intake for every front door, from a file to the model's detector.

Radiographs are not DRRs. :func:`load_xray` reads

* DICOM DX/CR/RF/XA with pydicom: the modality LUT (RescaleSlope/Intercept), the VOI LUT
  (window or LUT sequence) and the Presentation LUT (shape or sequence) are applied in that
  order; MONOCHROME1 is inverted only when no Presentation LUT already inverted it, so
  attenuation is bright exactly once. Spacing: ImagerPixelSpacing (detector plane), else
  PixelSpacing (detector plane unless PixelSpacingCalibrationType says it was calibrated to the
  patient, then at the isocenter); DistanceSourceToDetector and DistanceSourceToPatient give the
  magnification. A zero, negative or non-finite spacing counts as missing (a warning, no error).
* NRRD, NIfTI, MHA/MHD and plain PNG, JPEG or TIFF with MONAI's ``LoadImage`` (a 2D or one-slice
  image, e.g. what 3D Slicer exports or a public chest X-ray set holds), with the file's pixel
  spacing (none for the plain images, whose files carry none);
* a PNG inside a monai-gnerf projection folder (``<folder>/png/view_NNN.png`` beside
  ``<folder>/projections.json``), read back as exact line integrals with the folder's geometry.

:func:`to_model_detector` then resamples the image so one pixel covers the model's pixel size
*at the isocenter*, centres the body silhouette where the prior expects anatomy, crops or pads to
the model's detector and maps display values to line integrals (bright = attenuating). Without a
pixel spacing, the scale is estimated by fitting the body silhouette's width to the width the
prior's training views have (``silhouette_width_fraction``), with a one-line warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from pydicom.pixels import apply_modality_lut, apply_presentation_lut, apply_voi_lut
from scipy import ndimage

from monai_gnerf.errors import first_line, GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io.projections import png_full_scale, read_png16, read_projection_meta
from monai_gnerf.io.readers import NIFTI_SUFFIXES, load_image

__all__ = [
    "XRAY_IMAGE_SUFFIXES",
    "XRayImage",
    "body_silhouette",
    "load_xray",
    "silhouette_width_fraction",
    "to_model_detector",
]

_LOGGER = logging.getLogger(__name__)

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".ima")  # DICOM files often have none, or end in a UID
_PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_MIN_PIXEL_MM = 0.001  # no X-ray detector has pixels below a micrometre
_MAX_SIDE_MM = 3000.0  # nor images wider than 3 m (a long-leg film is 1.3 m)
XRAY_IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", *_PLAIN_IMAGE_SUFFIXES)
"""File suffixes read with MONAI's ``LoadImage``; anything else is tried as DICOM."""


@dataclass
class XRayImage:
    """One radiograph with what is known of its acquisition.

    Attributes:
        values: ``(rows, cols)`` float32; bright = attenuating.
        is_line_integral: ``True`` when ``values`` are exact line integrals (our own DRRs);
            ``False`` for display values with an unknown scale.
        pixel_spacing_mm: ``(row, col)`` pixel pitch, mm, or ``None`` if unknown.
        source_to_detector_mm: SDD, mm, or ``None``.
        source_to_isocenter_mm: SAD (DICOM DistanceSourceToPatient), mm, or ``None``.
        source: file the image came from.
        spacing_at_isocenter: ``pixel_spacing_mm`` is already at the isocenter (calibrated to the
            patient) rather than at the detector.
    """

    values: torch.Tensor
    is_line_integral: bool
    pixel_spacing_mm: tuple[float, float] | None
    source_to_detector_mm: float | None
    source_to_isocenter_mm: float | None
    source: str
    spacing_at_isocenter: bool = False

    def with_pixel_spacing(self, pixel_spacing_mm: float) -> XRayImage:
        """The same image with a given square detector-plane pixel spacing, mm (a user's override)."""
        problem = _spacing_problem((pixel_spacing_mm,) * 2, tuple(self.values.shape))
        if problem:
            raise GnerfInputError(f"pixel_spacing_mm {pixel_spacing_mm} is not this X-ray's pixel size: {problem}.")
        return replace(self, pixel_spacing_mm=(float(pixel_spacing_mm),) * 2, spacing_at_isocenter=False)


def _spacing_problem(spacing: tuple[float | None, ...], shape: tuple[int, ...]) -> str | None:
    """Why ``(row, col)`` spacings in mm cannot be those of an image of ``shape``, or ``None``: not
    two numbers of at least :data:`_MIN_PIXEL_MM`, or an image side beyond :data:`_MAX_SIDE_MM`."""
    if len(spacing) != 2 or not all(s is not None and s >= _MIN_PIXEL_MM for s in spacing):
        return f"a pixel spacing is two numbers of at least {_MIN_PIXEL_MM:g} mm"
    sides = [s * n for s, n in zip(spacing, shape)]  # type: ignore[operator]
    if max(sides) <= _MAX_SIDE_MM:
        return None
    return f"{shape[0]}x{shape[1]} pixels of it span {sides[0]:.3g} x {sides[1]:.3g} mm, over {_MAX_SIDE_MM:g} mm"


def _valid_spacing(spacing, shape: tuple[int, ...], source: str, tag: str) -> tuple[float, float] | None:
    """A usable ``(row, col)`` spacing in mm for an image of ``shape``, or ``None`` (with a warning
    naming the problem, :func:`_spacing_problem`)."""
    if spacing is None:
        return None
    items = list(spacing) if isinstance(spacing, (list, tuple, pydicom.multival.MultiValue)) else [spacing]
    values = tuple(_number(s) for s in items)
    problem = _spacing_problem(values, shape)
    if problem is None:
        return values  # type: ignore[return-value]
    shown = [str(item) if value is None else value for item, value in zip(items, values)]
    _LOGGER.warning(f"{source}: {tag} {shown} is not a pixel spacing ({problem}); treating the spacing as unknown.")
    return None


def _presentation_inverts(ds: pydicom.Dataset) -> bool:
    """Whether the dataset's Presentation LUT (shape or sequence) maps high values to dark."""
    if "PresentationLUTSequence" in ds:
        lut = np.asarray(ds.PresentationLUTSequence[0].LUTData, dtype=np.float64).ravel()
        return lut.size > 1 and lut[-1] < lut[0]
    return str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"


def _presentation_values(values: np.ndarray, ds: pydicom.Dataset, source: str) -> tuple[np.ndarray, bool]:
    """The Presentation LUT applied, and whether it inverted the image; an unusable one (a shape
    other than IDENTITY or INVERSE, a broken table) is left out with a warning naming ``source``."""
    if "PresentationLUTSequence" not in ds and "PresentationLUTShape" not in ds:
        return values, False
    try:
        return apply_presentation_lut(values, ds).astype(np.float64), _presentation_inverts(ds)
    except Exception as err:  # noqa: BLE001 - broken LUTs raise many types; each means "unusable"
        _LOGGER.warning(f"{source}: its Presentation LUT is unusable ({first_line(err)}); the image is read without it.")
        return values, False


def _voi_values(values: np.ndarray, ds: pydicom.Dataset, source: str) -> np.ndarray:
    """The VOI LUT (window or LUT table) applied; an unusable one (a window width of 0, LUT data
    shorter than its descriptor) is left out with a warning naming ``source``."""
    if "VOILUTSequence" in ds:  # a LUT table is indexed by the nearest integer value
        values = np.rint(values).astype(np.int64)
    try:
        return apply_voi_lut(values, ds).astype(np.float64)
    except Exception as err:  # noqa: BLE001 - broken LUTs raise many types; each means "unusable"
        _LOGGER.warning(f"{source}: its VOI LUT is unusable ({first_line(err)}); the image is read without it.")
        return values.astype(np.float64)


def _display_values(pixels: np.ndarray, ds: pydicom.Dataset, apply_voi: bool, source: str) -> np.ndarray:
    """Modality LUT, VOI LUT (:func:`_voi_values`), Presentation LUT; MONOCHROME1 inverted unless
    the Presentation LUT did."""
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = _voi_values(values, ds, source)
    values, inverted = _presentation_values(values, ds, source)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1" and not inverted:
        values = values.max() - values  # MONOCHROME1 shows attenuation dark: invert
    return values


def _unreadable_dicom_message(path: Path, err: Exception) -> str:
    """Why a file read as DICOM failed; a non-DICOM file with a suffix DICOM never has is named as
    an unknown format (a ``.gif`` is not a broken DICOM file)."""
    suffix = path.suffix.lower()
    names_a_format = suffix not in _DICOM_SUFFIXES and not suffix[1:].isdigit()  # "1.2.840.1234" is a UID
    if isinstance(err, pydicom.errors.InvalidDicomError) and names_a_format:
        formats = ", ".join(known.lstrip(".").upper() for known in XRAY_IMAGE_SUFFIXES)
        return f"{path}: {suffix} is not an X-ray format read here (DICOM, {formats})."
    return f"could not read DICOM X-ray {path}: {first_line(err)}"


def _dicom_xray(path: Path, apply_voi: bool) -> XRayImage:
    try:
        ds = pydicom.dcmread(path)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
        pixels = ds.pixel_array if photometric in _GRAYSCALE else None
    except Exception as err:  # noqa: BLE001 - corrupt files raise many types; one message for all
        raise GnerfInputError(_unreadable_dicom_message(path, err)) from None
    if pixels is None:
        raise GnerfInputError(f"{path} has PhotometricInterpretation {photometric}; a radiograph is grayscale (MONOCHROME1 or 2).")
    if pixels.ndim != 2:
        raise GnerfInputError(f"{path} holds a {pixels.ndim}D image; a radiograph must be one 2D frame.")
    if "RescaleSlope" in ds and _number(ds.RescaleSlope) == 0:
        raise GnerfInputError(f"{path} has RescaleSlope 0: its modality LUT maps every pixel to one value.")
    imager = _valid_spacing(ds.get("ImagerPixelSpacing"), pixels.shape, str(path), "ImagerPixelSpacing")
    patient = None if imager else _valid_spacing(ds.get("PixelSpacing"), pixels.shape, str(path), "PixelSpacing")
    sdd, sad = _positive_tag(ds, "DistanceSourceToDetector"), _positive_tag(ds, "DistanceSourceToPatient")
    if sdd is not None and sad is not None and sad >= sdd:
        _LOGGER.warning(
            f"{path}: DistanceSourceToPatient {sad:g} mm is not shorter than DistanceSourceToDetector {sdd:g} mm; "
            "ignoring both (the model's distances are used)."
        )
        sdd = sad = None
    return XRayImage(
        values=torch.from_numpy(_display_values(pixels, ds, apply_voi, str(path)).astype(np.float32)),
        is_line_integral=False,
        pixel_spacing_mm=imager or patient,
        source_to_detector_mm=sdd,
        source_to_isocenter_mm=sad,
        source=str(path),
        spacing_at_isocenter=patient is not None and "PixelSpacingCalibrationType" in ds,
    )


def _number(value: object) -> float | None:
    """A DICOM numeric value as a float, ``None`` when it is not a finite number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_tag(ds: pydicom.Dataset, keyword: str) -> float | None:
    """A positive distance tag in mm, ``None`` when absent or not a positive number (with a warning)."""
    if keyword not in ds:
        return None
    value = _number(ds.get(keyword))
    if value is None or value <= 0:
        _LOGGER.warning(f"{keyword} {ds.get(keyword)!r} is not a positive distance; ignoring it.")
        return None
    return value


def _projection_folder_xray(path: Path) -> XRayImage | None:
    """Exact line integrals of a PNG inside a monai-gnerf projection folder, else ``None``."""
    folder = path.parent.parent
    meta_path = folder / "projections.json"
    if path.parent.name != "png" or not meta_path.is_file() or not (folder / "geometry.json").is_file():
        return None
    geometry = load_geometry(folder / "geometry.json")
    values = read_png16(path, png_full_scale(read_projection_meta(meta_path)))
    return XRayImage(
        torch.from_numpy(values), True, geometry.pixel_spacing_mm, geometry.source_to_detector_mm,
        geometry.source_to_isocenter_mm, str(path),
    )  # fmt: skip


def _image_file_xray(path: Path) -> XRayImage:
    """A 2D or one-slice image through MONAI's ``LoadImage`` (arrays are ``(x, y)``: columns first)."""
    reader = "NibabelReader" if path.name.lower().endswith(NIFTI_SUFFIXES) else "ITKReader"
    image = load_image(path, reader, "X-ray image")
    plain = path.suffix.lower() in _PLAIN_IMAGE_SUFFIXES
    if image.ndim == 3 and image.shape[-1] in (3, 4) and plain:
        image = image[..., :3].mean(-1)  # an RGB(A) screenshot: its gray level
    keep = [axis for axis, n in enumerate(image.shape) if n > 1]
    if len(keep) != 2:
        raise GnerfInputError(
            f"{path} has shape {tuple(image.shape)}; an X-ray is one 2D image of at least 2x2 pixels (or a one-slice volume)."
        )
    values = torch.as_tensor(np.asarray(image)).squeeze().T.contiguous()  # (x, y) -> (rows, cols)
    pixdim = [float(image.pixdim[axis]) for axis in keep]
    spacing = None if plain else _valid_spacing(pixdim[::-1], tuple(values.shape), str(path), "spacing")
    return XRayImage(values.float(), False, spacing, None, None, str(path))


def load_xray(path: str | Path, apply_voi_lut: bool = True) -> XRayImage:
    """Read a radiograph (DICOM, NRRD/NIfTI/MHA, PNG/JPEG/TIFF); see the module docstring.

    Raises:
        GnerfInputError: missing or unreadable file, not 2D, or NaN values.
    """
    path = Path(path)
    if not path.is_file():
        raise GnerfInputError(f"X-ray file not found: {path}")
    if path.name.lower().endswith(XRAY_IMAGE_SUFFIXES):
        xray = (_projection_folder_xray(path) if path.suffix.lower() == ".png" else None) or _image_file_xray(path)
    else:
        xray = _dicom_xray(path, apply_voi_lut)
    if not torch.isfinite(xray.values).all():
        raise GnerfInputError(f"{path} contains NaN or infinite pixel values.")
    if float(xray.values.max() - xray.values.min()) <= 0:
        raise GnerfInputError(f"{path} is a constant image; there is no radiograph in it.")
    return xray


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the level that maximizes the between-class variance of the histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    return float(centres[int(np.nanargmax(between[:-1]))])


def body_silhouette(values: torch.Tensor) -> torch.Tensor:
    """The body in a radiograph (bright = attenuating): Otsu's threshold, largest region, holes filled.

    Args:
        values: ``(rows, cols)`` display values or line integrals.

    Returns:
        ``(rows, cols)`` bool mask (all false for an image with no contrast).
    """
    array = values.detach().float().cpu().numpy()
    if float(array.max() - array.min()) <= 0:
        return torch.zeros(values.shape, dtype=torch.bool)
    labels, count = ndimage.label(array > _otsu_threshold(array))
    if count == 0:
        return torch.zeros(values.shape, dtype=torch.bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(array), labels, range(1, count + 1))))
    return torch.from_numpy(ndimage.binary_fill_holes(labels == largest))


def _extent(mask: torch.Tensor, axis: int) -> tuple[int, int] | None:
    """First and last index along ``axis`` (0 rows, 1 columns) where the mask has a pixel."""
    hits = torch.nonzero(mask.any(dim=1 - axis)).flatten()
    return None if hits.numel() == 0 else (int(hits[0]), int(hits[-1]))


def silhouette_width_fraction(views: torch.Tensor) -> float:
    """Mean width of the body silhouette over views ``(V, rows, cols)``, as a fraction of the columns."""
    widths = []
    for view in views:
        extent = _extent(body_silhouette(view), axis=1)
        if extent is not None:
            widths.append((extent[1] - extent[0] + 1) / view.shape[-1])
    if not widths:
        raise GnerfInputError("no body silhouette found in the views.")
    return float(np.mean(widths))


def _pixel_at_isocenter_mm(xray: XRayImage, geometry: ProjectionGeometry) -> tuple[float, float] | None:
    """The radiograph's pixel size at the isocenter from its spacing and distances (model's when absent)."""
    if xray.pixel_spacing_mm is None:
        return None
    if xray.spacing_at_isocenter:
        return xray.pixel_spacing_mm
    sdd = xray.source_to_detector_mm or geometry.source_to_detector_mm
    sad = xray.source_to_isocenter_mm or geometry.source_to_isocenter_mm
    if sdd is None or sad is None:  # parallel beam: no magnification
        return xray.pixel_spacing_mm
    return xray.pixel_spacing_mm[0] * sad / sdd, xray.pixel_spacing_mm[1] * sad / sdd


def _estimated_pixel_mm(
    xray: XRayImage,
    mask: torch.Tensor,
    model_iso: tuple[float, float],
    model_shape: tuple[int, int],
    width_fraction: float | None,
) -> tuple[float, float]:
    """Pixel size at the isocenter when the file gives none: fit the silhouette width, else fill the detector."""
    extent = _extent(mask, axis=1)
    touches_both_sides = extent is not None and extent[0] == 0 and extent[1] == mask.shape[1] - 1
    if width_fraction is not None and extent is not None and not touches_both_sides:
        pixel = width_fraction * model_shape[1] * model_iso[1] / (extent[1] - extent[0] + 1)
        _LOGGER.warning(
            f"{xray.source}: no pixel spacing; estimated {pixel:.3f} mm per pixel at the isocenter by fitting the "
            f"body silhouette to the model's field of view (set pixel_spacing_mm to override)."
        )
    else:
        pixel = max(m * n_model / n for m, n_model, n in zip(model_iso, model_shape, mask.shape))
        _LOGGER.warning(f"{xray.source}: no pixel spacing; assuming the image spans the model's detector.")
    return pixel, pixel


def _centre(mask: torch.Tensor, centre_silhouette: bool) -> tuple[float, float]:
    """``(row, col)`` source position put at the model detector's centre: the silhouette's box centre or the image's."""
    extents = [_extent(mask, axis) for axis in (0, 1)] if centre_silhouette else [None, None]
    return tuple(  # type: ignore[return-value]
        (n - 1) / 2.0 if e is None else (e[0] + e[1]) / 2.0 for n, e in zip(mask.shape, extents)
    )


def to_model_detector(
    xray: XRayImage,
    geometry: ProjectionGeometry,
    reference_max: float,
    silhouette_width_fraction: float | None = None,
    centre_silhouette: bool = True,
) -> torch.Tensor:
    """Resample an X-ray onto the model's detector, in line integrals ``(rows, cols)``.

    Args:
        xray: the radiograph.
        geometry: the model's acquisition (its detector and magnification).
        reference_max: line integral to map the image's 99.5th percentile to, for display-valued
            images (e.g. the training data's typical maximum); exact line integrals are kept.
        silhouette_width_fraction: body width the model's views have, as a fraction of the
            detector's columns; used to estimate the scale of an image without pixel spacing.
        centre_silhouette: put the centre of the body silhouette's bounding box at the
            detector's centre (display-valued images only; our own DRRs keep their geometry).

    Pixels outside the radiograph become 0 (air).
    """
    values = xray.values.float()
    model_shape = geometry.detector_shape
    model_iso = geometry.pixel_spacing_at_isocenter_mm
    mask = body_silhouette(values) if not xray.is_line_integral else torch.zeros(values.shape, dtype=torch.bool)
    src_iso = _pixel_at_isocenter_mm(xray, geometry) or _estimated_pixel_mm(
        xray, mask, model_iso, model_shape, silhouette_width_fraction
    )
    factor = max(1, int(min(m / s for m, s in zip(model_iso, src_iso))))
    image = F.avg_pool2d(values[None, None], factor) if factor > 1 else values[None, None]
    centre = [(c - (factor - 1) / 2.0) / factor for c in _centre(mask, centre_silhouette and not xray.is_line_integral)]
    src_iso = [s * factor for s in src_iso]
    axes = []
    for n_out, n_in, out_mm, in_mm, c in zip(model_shape, image.shape[-2:], model_iso, src_iso, centre):
        position = (torch.arange(n_out, dtype=torch.float32) - (n_out - 1) / 2.0) * out_mm / in_mm + c
        axes.append((position + 0.5) / n_in * 2.0 - 1.0)
    grid = torch.stack(torch.meshgrid(axes[1], axes[0], indexing="xy"), dim=-1)[None]
    resampled = F.grid_sample(image, grid, align_corners=False, padding_mode="zeros")[0, 0]
    if xray.is_line_integral:
        return resampled.clamp(min=0.0)
    low, high = torch.quantile(values.flatten()[:: max(1, values.numel() // 100_000)], torch.tensor([0.005, 0.995]))
    scale = (high - low).clamp(min=1e-12)
    inside = F.grid_sample(torch.ones_like(image), grid, align_corners=False, padding_mode="zeros")[0, 0]
    return ((resampled - low * inside) / scale).clamp(min=0.0) * reference_max
