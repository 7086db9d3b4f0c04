"""Quick-look figures (PNG, Pillow only): orthogonal slices of volumes side by side, error maps."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw

from monai_gnerf.io.atomic import atomic_output_file

__all__ = ["orthogonal_slices", "comparison_figure", "single_view_figure", "fit_figure", "loss_curve", "figure_path"]


def figure_path(volume_path: str | Path) -> Path:
    """The figure written beside a volume file: ``recon.nii.gz`` -> ``recon.png``."""
    path = Path(volume_path)
    stem = path.name[: -len("".join(path.suffixes))] if path.suffixes else path.name
    return path.with_name(f"{stem}.png")


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


def loss_curve(history: list[float], width: int = 288, height: int = 96) -> Image.Image:
    """A gray picture of a loss history: log10 of the loss (y, top = highest) over the steps (x).

    The curve is white on black, with the first and last values written in the corners.
    """
    picture = Image.new("L", (width, height), color=0)
    values = np.log10(np.maximum(np.asarray(history, dtype=np.float64), 1e-12))
    if values.size == 0:
        return picture
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 1e-9)
    margin = 12
    xs = margin + np.linspace(0.0, width - 2 * margin, num=values.size)
    ys = margin + (high - values) / span * (height - 2 * margin)
    draw = ImageDraw.Draw(picture)
    draw.line(list(zip(xs.tolist(), ys.tolist())) if values.size > 1 else [(xs[0], ys[0]), (xs[0] + 1, ys[0])],
              fill=255, width=1)  # fmt: skip
    draw.text((2, 0), f"loss {history[0]:.3g}", fill=160)
    draw.text((width // 2, height - 11), f"-> {history[-1]:.3g} ({values.size} steps)", fill=160)
    return picture


def fit_figure(path: str | Path, input_view: torch.Tensor, fitted_view: torch.Tensor, history: list[float],
               tile: int = 96) -> Path:  # fmt: skip
    """Write a PNG of a single-view fit: the input view, the fitted model's view at the input
    angle and their absolute difference (same gray scale as the input), above the loss history."""
    high = max(float(input_view.max()), 1e-9)
    pictures = [input_view, fitted_view, (fitted_view - input_view).abs()]
    titles = ["input", "fitted", "|fitted - input|"]
    label = 14
    curve = loss_curve(history, 3 * tile, tile)
    sheet = Image.new("L", (3 * tile, 2 * label + 2 * tile), color=0)
    draw = ImageDraw.Draw(sheet)
    for c, (title, image) in enumerate(zip(titles, pictures)):
        draw.text((c * tile + 2, 1), title, fill=255)
        sheet.paste(_to_gray(image.detach().cpu().float().numpy(), 0.0, high, tile), (c * tile, label))
    draw.text((2, label + tile + 1), "loss history (log scale)", fill=255)
    sheet.paste(curve, (0, 2 * label + tile))
    path = Path(path)
    with atomic_output_file(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
