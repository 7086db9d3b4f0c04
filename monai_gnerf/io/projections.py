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
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, projection_affine
from monai_gnerf.io.atomic import atomic_output_dir

__all__ = ["save_projections", "load_projections", "write_png16", "read_png16"]

_FORMAT = "monai-gnerf projections"
_VERSION = 1


def write_png16(path: Path, image: np.ndarray, full_scale: float) -> None:
    """Write ``image`` as a 16-bit grayscale PNG, mapping ``[0, full_scale]`` to ``[0, 65535]``."""
    scaled = np.clip(np.round(image / full_scale * 65535.0), 0, 65535).astype(np.uint16)
    Image.fromarray(scaled).save(path)


def read_png16(path: Path, full_scale: float = 65535.0) -> np.ndarray:
    """Read a grayscale PNG (8 or 16 bit) as float32 in ``[0, full_scale]``."""
    with Image.open(path) as im:
        bits = 8 if im.mode in ("L", "P") else 16
        array = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P") else im, dtype=np.float32)
    return array / (2.0**bits - 1.0) * full_scale


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
    meta_path = folder / "projections.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    stack = folder / "projections.nii.gz"
    if stack.is_file():
        data = np.asarray(nib.load(stack).dataobj, dtype=np.float32).transpose(2, 1, 0)
    else:
        pngs = sorted((folder / "png").glob("*.png")) or sorted(folder.glob("*.png"))
        if not pngs:
            raise GnerfInputError(f"{folder} holds neither projections.nii.gz nor PNG views.")
        data = np.stack([read_png16(p, float(meta.get("png_full_scale", 1.0))) for p in pngs])
    expected = (geometry.num_views, *geometry.detector_shape)
    if data.shape != expected:
        raise GnerfInputError(f"{folder}: projections have shape {data.shape} but geometry.json says {expected}.")
    if not np.isfinite(data).all():
        raise GnerfInputError(f"{folder}: projections contain NaN or infinite values.")
    tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=projection_affine(geometry), meta=meta)
    return tensor, geometry
