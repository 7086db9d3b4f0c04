"""Classical analytic reconstruction: FDK (cone beam) and FBP (parallel beam), in PyTorch.

Both use the same :class:`~monai_gnerf.geometry.ProjectionGeometry` as the renderer and return
attenuation (1/mm) on any grid given by shape and affine. Steps (Feldkamp-Davis-Kress):

1. weight each pixel by the cosine of its ray to the central ray (cone beam only);
2. ramp-filter each detector row, in isocenter-plane units (pixel spacing / magnification),
   with the band-limited spatial ramp kernel (no DC bias) and an optional apodization window;
3. backproject: every voxel takes the bilinearly interpolated filtered value at its projection,
   times ``(SAD / depth)^2`` for cone beam; the sum is scaled by ``pi / views``.

Angles are assumed uniformly spaced over 180 or 360 degrees (the scaling holds for both). A
180-degree cone-beam orbit lacks the fan-angle margin of a short scan: FDK is then approximate.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from monai_gnerf.geometry import ProjectionGeometry, grid_detector_coordinates
from monai_gnerf.progress import progress_bar

__all__ = ["ramp_filter", "fdk"]

Window = Literal["ram-lak", "shepp-logan", "cosine", "hann"]


def _ramp_response(width: int, spacing_mm: float, window: Window, dtype: torch.dtype, device) -> torch.Tensor:
    """Frequency response (length ``2 * width`` padded) of the spatial ramp kernel times a window."""
    size = 1 << max(6, math.ceil(math.log2(2 * width)))
    n = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64).round()  # 0, 1, ..., -1 (integer lags)
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[n == 0] = 1.0 / (4.0 * spacing_mm**2)
    odd = n.abs() % 2 == 1
    kernel[odd] = -1.0 / (math.pi**2 * n[odd] ** 2 * spacing_mm**2)
    response = torch.fft.fft(kernel).real * spacing_mm  # x spacing: discrete sum -> integral
    freq = torch.fft.fftfreq(size, dtype=torch.float64).abs() * 2.0  # 0 .. 1 (Nyquist)
    if window == "shepp-logan":
        response = response * torch.sinc(freq / 2.0)
    elif window == "cosine":
        response = response * torch.cos(math.pi * freq / 2.0)
    elif window == "hann":
        response = response * 0.5 * (1.0 + torch.cos(math.pi * freq))
    elif window != "ram-lak":
        raise ValueError(f"unknown window {window!r}; choose ram-lak, shepp-logan, cosine or hann.")
    return response.to(dtype=dtype, device=device)


def ramp_filter(projections: torch.Tensor, spacing_mm: float, window: Window = "shepp-logan") -> torch.Tensor:
    """Ramp-filter ``(..., cols)`` along the last axis; ``spacing_mm`` is the column pitch."""
    width = projections.shape[-1]
    response = _ramp_response(width, spacing_mm, window, projections.dtype, projections.device)
    padded = F.pad(projections, (0, response.shape[0] - width))
    return torch.fft.ifft(torch.fft.fft(padded, dim=-1) * response, dim=-1).real[..., :width]


def _cosine_weights(geometry: ProjectionGeometry, dtype: torch.dtype, device) -> torch.Tensor:
    """``SAD / sqrt(SAD^2 + u^2 + v^2)`` with detector coordinates scaled to the isocenter plane."""
    if geometry.beam == "parallel":
        return torch.ones(geometry.detector_shape, dtype=dtype, device=device)
    rows, cols = geometry.detector_shape
    m = geometry.magnification
    v = ((torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2) * geometry.pixel_spacing_mm[0]
         + geometry.detector_offset_mm[0]) / m  # fmt: skip
    u = ((torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2) * geometry.pixel_spacing_mm[1]
         + geometry.detector_offset_mm[1]) / m  # fmt: skip
    sad = float(geometry.source_to_isocenter_mm)  # type: ignore[arg-type]
    weights = sad / torch.sqrt(sad**2 + u[None, :] ** 2 + v[:, None] ** 2)
    return weights.to(dtype=dtype, device=device)


def fdk(
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    window: Window = "shepp-logan",
    progress: bool = False,
) -> torch.Tensor:
    """FDK (cone beam) or FBP (parallel beam) reconstruction on a grid.

    Args:
        projections: line integrals ``(views, rows, cols)``.
        geometry: their geometry (isocenter resolved).
        shape: output grid ``(I, J, K)``.
        affine: output grid voxel index -> world mm.
        window: apodization of the ramp filter.
        progress: show a progress bar over views.

    Returns:
        Attenuation (1/mm), ``shape``, on the projections' device.
    """
    device, dtype = projections.device, projections.dtype
    iso_spacing = geometry.pixel_spacing_at_isocenter_mm[1]
    filtered = ramp_filter(projections * _cosine_weights(geometry, dtype, device), iso_spacing, window)
    rows, cols = geometry.detector_shape
    total = torch.zeros(*shape, dtype=dtype, device=device)
    for view in progress_bar(range(geometry.num_views), desc="FDK", disable=not progress, unit="view"):
        row, col, depth = grid_detector_coordinates(geometry, view, shape, affine, dtype, device)
        grid = torch.stack((col * (2.0 / (cols - 1)), row * (2.0 / (rows - 1))), -1) - 1.0  # (x=col, y=row) in [-1, 1]
        sampled = F.grid_sample(filtered[view][None, None], grid.view(1, 1, -1, 2), align_corners=True)
        sampled = sampled.view(*shape)
        if geometry.beam == "cone":  # the depth is along the central ray
            sampled = sampled * (float(geometry.source_to_isocenter_mm) / depth) ** 2  # type: ignore[arg-type]
        total += sampled
    return total * (math.pi / geometry.num_views)
