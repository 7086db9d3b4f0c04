"""Projection sets on disk: a NIfTI stack, 16-bit PNGs, ``geometry.json`` and ``projections.json``.

Layout of a projection folder (what ``monai-gnerf drr`` writes and ``reconstruct`` reads)::

    geometry.json        the resolved ProjectionGeometry (isocenter filled in)
    projections.nii.gz   float32 line integrals, array (cols, rows, views), pixel spacing in mm
    projections.json     units, PNG scale, source volume affine and shape
    png/view_000.png     16-bit PNG per view: round(65535 * p / png_full_scale), bone bright

The NIfTI stack is the exact data; PNGs are for viewing and for tools that expect images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_gnerf.config import PositiveFloat, coerce, parse_json
from monai_gnerf.errors import GnerfInputError, first_line
from monai_gnerf.geometry import ProjectionGeometry, projection_affine
from monai_gnerf.io.atomic import atomic_output_dir
from monai_gnerf.io.readers import load_image
from monai_gnerf.physics import WaterAttenuationPerMm

__all__ = [
    "PROJECTION_FOLDER_CONTENTS", "check_png", "load_projections", "png_full_scale", "projection_folder_bytes", "read_png16",
    "read_projection_meta", "save_projections", "write_png16",
]  # fmt: skip

_FORMAT = "monai-gnerf projections"
_VERSION = 1


def write_png16(path: Path, image: np.ndarray, full_scale: float) -> None:
    """Write ``image`` as a 16-bit grayscale PNG, mapping ``[0, full_scale]`` to ``[0, 65535]``."""
    scaled = np.clip(np.round(image / full_scale * 65535.0), 0, 65535).astype(np.uint16)
    Image.fromarray(scaled).save(path)


def read_png16(path: Path, full_scale: float = 65535.0) -> np.ndarray:
    """Read a PNG as float32 in ``[0, full_scale]``: 16-bit gray as it is, any 8-bit mode as its gray level.

    Raises:
        GnerfInputError: the file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            sixteen_bit = im.mode.startswith("I")
            array = np.asarray(im if sixteen_bit else im.convert("L"), dtype=np.float32)
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise _unreadable_png(path, err) from None
    return array / (65535.0 if sixteen_bit else 255.0) * full_scale


def check_png(path: Path) -> None:
    """Refuse a file whose header is not an image's, without decoding its pixels (a cheap check of
    many views before long work).

    Raises:
        GnerfInputError: the file is not a readable image.
    """
    try:
        Image.open(path).close()
    except (OSError, ValueError) as err:
        raise _unreadable_png(path, err) from None


def _unreadable_png(path: Path, err: BaseException) -> GnerfInputError:
    return GnerfInputError(f"could not read PNG {path}: {first_line(err)}")


def save_projections(
    out_dir: str | Path,
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a projection set atomically (nothing is left behind if writing fails).

    Args:
        out_dir: destination folder (created; existing files of the same names are replaced).
        projections: line integrals ``(views, rows, cols)``.
        geometry: the resolved geometry of these projections.
        extra: additional JSON-ready metadata for ``projections.json``.

    Returns:
        The output folder.
    """
    data = projections.detach().cpu().float().numpy()
    if data.shape != (geometry.num_views, *geometry.detector_shape):
        raise GnerfInputError(
            f"projections of shape {data.shape} do not match the geometry "
            f"({geometry.num_views}, {geometry.detector_shape[0]}, {geometry.detector_shape[1]})."
        )
    full_scale = float(max(data.max(), 1e-6))
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "units": "line integral of attenuation (dimensionless)",
        "array_layout": "NIfTI array (cols, rows, views)",
        "png_full_scale": full_scale,
        **(extra or {}),
    }
    with atomic_output_dir(out_dir) as staging:
        geometry.to_json(staging / "geometry.json")
        (staging / "projections.json").write_text(json.dumps(meta, indent=2) + "\n")
        affine = np.diag([geometry.pixel_spacing_mm[1], geometry.pixel_spacing_mm[0], 1.0, 1.0])
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine), staging / "projections.nii.gz")
        png_dir = staging / "png"
        png_dir.mkdir()
        for view, image in enumerate(data):
            write_png16(png_dir / f"view_{view:03d}.png", image, full_scale)
    return Path(out_dir)


PROJECTION_FOLDER_CONTENTS = ("geometry.json", "projections.json", "projections.nii.gz", "png")
"""What :func:`save_projections` writes into its folder."""
NEGATIVE_TOLERANCE = 0.01
"""Negative line integrals down to this fraction of the largest are noise; below, an error."""
_BYTES_PER_PIXEL = 4 + 2  # float32 stack + 16-bit PNG (before compression: an upper bound)
_NIFTI_MAX_DIM = 32767  # NIfTI-1 stores each dimension as a signed 16-bit integer


def projection_folder_bytes(num_views: int, detector_shape: Sequence[int]) -> int:
    """Upper bound of the size of a folder of ``num_views`` projections of ``detector_shape``
    (rows, cols), bytes; from the counts alone, so a size is checked before any angle is made.

    Raises:
        GnerfInputError: the stack does not fit a NIfTI-1 file (at most 32767 along each axis).
    """
    if max(num_views, *detector_shape) > _NIFTI_MAX_DIM:
        raise GnerfInputError(f"{num_views} views of {detector_shape[0]}x{detector_shape[1]} pixels do not fit a "
                              f"projection stack: a NIfTI-1 file holds at most {_NIFTI_MAX_DIM} along each axis.")  # fmt: skip
    return num_views * detector_shape[0] * detector_shape[1] * _BYTES_PER_PIXEL + 65536


def read_projection_meta(path: Path) -> dict[str, Any]:
    """``projections.json`` as a dict (empty when absent); a broken file, or a field the library uses
    (``mu_water_per_mm``, ``png_full_scale``, the source grid) out of range, is one error line."""
    if not path.is_file():
        return {}
    meta = parse_json(path.read_bytes(), str(path))
    if not isinstance(meta, dict):
        raise GnerfInputError(f"{path} must hold a JSON object, got {type(meta).__name__}.")
    coerce(meta.get("mu_water_per_mm"), WaterAttenuationPerMm | None, f"{path}: mu_water_per_mm")
    coerce(meta.get("png_full_scale", 1.0), PositiveFloat, f"{path}: png_full_scale")
    _check_volume_grid(meta, path)
    return meta


def _check_volume_grid(meta: dict[str, Any], path: Path) -> None:
    """The source grid a folder records (``volume_affine`` with ``volume_shape``) is a usable grid."""
    if ("volume_affine" in meta) != ("volume_shape" in meta):
        raise GnerfInputError(f"{path}: volume_affine and volume_shape go together; give both or neither.")
    if "volume_affine" not in meta:
        return
    shape = meta["volume_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(n) is int and n >= 1 for n in shape)):
        raise GnerfInputError(f"{path}: volume_shape must be 3 whole numbers >= 1, got {shape!r}.")
    try:
        affine = np.asarray(meta["volume_affine"], dtype=np.float64)
    except (TypeError, ValueError):
        affine = np.zeros(0)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GnerfInputError(f"{path}: volume_affine must be an invertible 4x4 matrix of numbers (voxel index -> mm).")


def png_full_scale(meta: dict[str, Any]) -> float:
    """The line integral of a white PNG pixel recorded in ``projections.json`` as
    :func:`read_projection_meta` read and checked it (default 1)."""
    return float(meta.get("png_full_scale", 1.0))


def _view_order(path: Path) -> list[Any]:
    """Sort key of a view file: numbers in the name compare as numbers (``view_2`` before ``view_10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def load_projections(folder: str | Path) -> tuple[MetaTensor, ProjectionGeometry]:
    """Read a projection folder written by :func:`save_projections` (or PNGs plus ``geometry.json``).

    Returns:
        Line integrals ``(views, rows, cols)`` as a ``MetaTensor`` (its meta holds
        ``projections.json``) and the geometry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GnerfInputError(f"projection folder not found: {folder}")
    if not (folder / "geometry.json").is_file():
        raise GnerfInputError(f"{folder} has no geometry.json describing its projections.")
    geometry = ProjectionGeometry.from_json(folder / "geometry.json")
    meta = read_projection_meta(folder / "projections.json")
    stack = folder / "projections.nii.gz"
    expected = (geometry.num_views, *geometry.detector_shape)
    if stack.is_file():
        data = load_image(stack, "NibabelReader", "projection stack").numpy()
        if data.ndim != 3:
            raise GnerfInputError(f"{stack} must be a 3D stack (cols, rows, views), got {data.ndim}D {data.shape}.")
        data = data.transpose(2, 1, 0)
    else:
        pngs = sorted((folder / "png").glob("*.png"), key=_view_order) or sorted(folder.glob("*.png"), key=_view_order)
        if not pngs:
            raise GnerfInputError(f"{folder} holds neither projections.nii.gz nor PNG views.")
        views = [read_png16(p, png_full_scale(meta)) for p in pngs]
        for path, view in zip(pngs, views):
            if view.shape != expected[1:]:
                raise GnerfInputError(f"{path} has {view.shape} pixels but geometry.json says {expected[1:]}.")
        data = np.stack(views)
    if data.shape != expected:
        raise GnerfInputError(f"{folder}: projections have shape {data.shape} but geometry.json says {expected}.")
    if not np.isfinite(data).all():
        raise GnerfInputError(f"{folder}: projections contain NaN or infinite values.")
    if data.min() < -NEGATIVE_TOLERANCE * max(float(data.max()), 0.0):
        raise GnerfInputError(
            f"{folder}: projections go down to {data.min():.4g}, below zero by more than noise "
            f"({NEGATIVE_TOLERANCE:.0%} of the largest, {data.max():.4g}); line integrals of attenuation are >= 0 "
            "(intensities must be converted with -log(I/I0) first)."
        )
    tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=projection_affine(geometry), meta=meta)
    return tensor, geometry
