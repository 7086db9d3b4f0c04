"""Quick-look figures (PNG, Pillow only): orthogonal slices of volumes side by side, error maps."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw

from monai_gnerf.io.atomic import atomic_output_file

__all__ = ["orthogonal_slices", "comparison_figure", "single_view_figure"]


def orthogonal_slices(volume: torch.Tensor, affine: torch.Tensor) -> list[np.ndarray]:
    """Central axial, coronal and sagittal slices, oriented for display (anterior up, superior up).

    The array axes are matched to world axes through the affine, so any voxel order displays the
    same way: axial (x across, y up), coronal (x across, z up), sagittal (y across, z up), with
    the patient's right on the image's left as in radiology.
    """
    array = volume.detach().cpu().float().numpy()
    linear = torch.as_tensor(affine)[:3, :3].abs()
    order = [int(linear[:, axis].argmax()) for axis in range(3)]  # world axis of each array axis
    array = np.transpose(array, np.argsort(order))  # now indexed (x, y, z)
    signs = [float(torch.as_tensor(affine)[w, int(np.argsort(order)[w])]) for w in range(3)]
    for w in range(3):
        if signs[w] < 0:
            array = np.flip(array, w)  # index now increases towards +x (right), +y (anterior), +z
    cx, cy, cz = (n // 2 for n in array.shape)
    axial = array[::-1, ::-1, cz].T  # rows: anterior at top; columns: patient right on the left
    coronal = array[::-1, cy, ::-1].T
    sagittal = array[cx, ::-1, ::-1].T
    return [axial, coronal, sagittal]


def _to_gray(image: np.ndarray, low: float, high: float, size: int) -> Image.Image:
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0
    picture = Image.fromarray(scaled.astype(np.uint8))
    ratio = size / max(picture.size)
    return picture.resize((max(1, round(picture.size[0] * ratio)), max(1, round(picture.size[1] * ratio))))


def comparison_figure(
    path: str | Path,
    volumes: Mapping[str, torch.Tensor],
    affine: torch.Tensor,
    window: tuple[float, float],
    reference: str | None = None,
    error_window: float | None = None,
    panel: int = 220,
) -> Path:
    """Write a PNG: one column per volume (and per error map against ``reference``), rows =
    axial, coronal, sagittal. ``window`` is the display range (e.g. HU -1000..1000)."""
    columns: list[tuple[str, list[np.ndarray], tuple[float, float]]] = []
    slices = {name: orthogonal_slices(vol, affine) for name, vol in volumes.items()}
    for name in volumes:
        columns.append((name, slices[name], window))
    if reference is not None:
        limit = error_window or (window[1] - window[0]) / 4.0
        for name in volumes:
            if name != reference:
                errors = [np.abs(a - b) for a, b in zip(slices[name], slices[reference])]
                columns.append((f"|{name} - {reference}|", errors, (0.0, limit)))
    label_h = 18
    sheet = Image.new("L", (panel * len(columns), label_h + panel * 3), color=0)
    draw = ImageDraw.Draw(sheet)
    for c, (title, images, (low, high)) in enumerate(columns):
        draw.text((c * panel + 4, 3), title, fill=255)
        for r, image in enumerate(images):
            tile = _to_gray(image, low, high, panel)
            sheet.paste(tile, (c * panel + (panel - tile.size[0]) // 2, label_h + r * panel + (panel - tile.size[1]) // 2))
    path = Path(path)
    with atomic_output_file(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def single_view_figure(
    path: str | Path,
    rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    affine: torch.Tensor,
    angles: tuple[int, ...] = (0, 18, 36, 54),
    tile: int = 96,
) -> Path:
    """Write a PNG of single-view results, two picture rows per case: fitted above, true below.

    Columns: the input view, the views ``angles`` (indices into the view stack; 0/90/180/270 degrees
    of a 72-view orbit by default), then the central axial, coronal and sagittal slices.

    Args:
        path: PNG to write.
        rows: per case ``(title, true views (V, H, W), fitted views, true volume, fitted volume)``.
        affine: the volumes' voxel index -> world mm (orients the slices).
        angles: view indices shown.
        tile: pixels per picture.
    """
    label = 14
    columns = 1 + len(angles) + 3
    sheet = Image.new("L", (tile * columns, (2 * tile + label) * len(rows)), color=0)
    draw = ImageDraw.Draw(sheet)
    for r, (title, true_views, views, true_volume, volume) in enumerate(rows):
        y = r * (2 * tile + label)
        draw.text((2, y + 1), f"{title}: input | views (fitted over true) | slices", fill=255)
        view_high, volume_high = float(true_views.max()), float(true_volume.max())
        pictures = [(true_views[0].cpu().numpy(), None, view_high)]
        pictures += [(views[v].cpu().numpy(), true_views[v].cpu().numpy(), view_high) for v in angles]
        fitted, truth = orthogonal_slices(volume, affine), orthogonal_slices(true_volume, affine)
        pictures += [(a, b, volume_high) for a, b in zip(fitted, truth)]
        for c, (top, bottom, high) in enumerate(pictures):
            for k, image in enumerate((top, bottom)):
                if image is not None:
                    picture = _to_gray(np.asarray(image), 0.0, max(high, 1e-9), tile)
                    sheet.paste(picture, (c * tile, y + label + k * tile))
    path = Path(path)
    with atomic_output_file(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
