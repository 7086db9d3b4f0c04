"""Rays at continuous detector positions and GRAF's patch ray sampler.

A generative radiance field is trained on small patches of full views: ``P x P`` rays spread
over a square of ``scale`` times the detector (scale 1: the whole view, strided), shifted at
random. Real patches are read from the same continuous pixel positions of the training views by
bilinear interpolation, so real and generated patches see the same anatomy at the same scale.

Pixel coordinates follow :class:`~monai_gnerf.geometry.ProjectionGeometry`: pixel centres sit at
integer ``(row, col)``; rows run along ``v`` and columns along ``u``. :func:`view_rays` is
differentiable with respect to the view angle (pose-aware single-view fitting).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry

__all__ = ["view_rays", "full_view_pixels", "PatchRaySampler", "PatchBatch", "sample_image_patches"]


def _rotate(vectors: torch.Tensor, axis: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation of ``(3,)`` vectors by a batch of angles ``(B,)`` -> ``(B, 3)``."""
    cos, sin = torch.cos(angle_rad)[:, None], torch.sin(angle_rad)[:, None]
    cross = torch.linalg.cross(axis.expand(angle_rad.shape[0], 3), vectors.expand(angle_rad.shape[0], 3))
    return vectors * cos + cross * sin + axis * (axis @ vectors) * (1.0 - cos)


def view_rays(
    geometry: ProjectionGeometry, angles_deg: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays (mm) through continuous pixel positions of views at arbitrary angles.

    Args:
        geometry: acquisition (its isocenter must be resolved); its angle list and tilt are not
            used, only the orbit, the distances and the detector.
        angles_deg: ``(B,)`` orbit angles in degrees (differentiable).
        rows: ``(B, R)`` continuous row coordinates (pixel centres at integers).
        cols: ``(B, R)`` continuous column coordinates.

    Returns:
        Origins and unit directions, each ``(B, R, 3)``, in the dtype/device of ``rows``.
    """
    frame = replace(geometry, angles_deg=(0.0,), tilt_deg=None).frame(0)
    dtype, device = rows.dtype, rows.device
    as_t = lambda x: x.to(dtype=dtype, device=device)  # noqa: E731
    iso = torch.tensor(geometry.isocenter_mm, dtype=dtype, device=device)
    axis = as_t(torch.tensor(geometry.rotation_axis, dtype=torch.float64))
    axis = axis / torch.linalg.vector_norm(axis)
    angle = torch.deg2rad(angles_deg.to(dtype=dtype, device=device))
    source = iso + _rotate(as_t(frame.source_mm) - iso, axis, angle)
    center = iso + _rotate(as_t(frame.detector_center_mm) - iso, axis, angle)
    u, v, n = (_rotate(as_t(x), axis, angle) for x in (frame.u, frame.v, frame.n))
    n_rows, n_cols = geometry.detector_shape
    dv, du = geometry.pixel_spacing_mm
    pixels = (
        center[:, None]
        + ((rows - (n_rows - 1) / 2.0) * dv)[..., None] * v[:, None]
        + ((cols - (n_cols - 1) / 2.0) * du)[..., None] * u[:, None]
    )
    if geometry.beam == "parallel":
        return pixels, n[:, None].expand_as(pixels)
    direction = pixels - source[:, None]
    return source[:, None].expand_as(pixels), direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)


def full_view_pixels(
    geometry: ProjectionGeometry, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates ``(H*W,)`` of every pixel centre, row-major."""
    n_rows, n_cols = geometry.detector_shape
    r, c = torch.meshgrid(
        torch.arange(n_rows, dtype=torch.float32, device=device),
        torch.arange(n_cols, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return r.reshape(-1), c.reshape(-1)


@dataclass
class PatchBatch:
    """Continuous pixel coordinates of a batch of patches.

    Attributes:
        rows: ``(B, P*P)`` row coordinates.
        cols: ``(B, P*P)`` column coordinates.
        scale: ``(B,)`` fraction of the detector each patch spans.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    scale: torch.Tensor


class PatchRaySampler:
    """GRAF's flexible patch sampler with a scale annealed from ``max_scale`` to ``min_scale``.

    At scale ``s`` a patch's ``P x P`` rays are spread evenly over ``s`` times the detector's
    rows and columns and shifted uniformly at random inside the view; at scale 1 and
    ``P`` equal to the detector size they are exactly the full view's pixel centres.

    Args:
        geometry: acquisition whose detector the patches tile.
        patch_size: rays per patch side ``P``.
        min_scale: smallest scale reached after annealing (GRAF: 0.25 for 32 on 128).
        max_scale: largest scale (1 = the whole view).
        anneal_iterations: iterations over which the lower scale bound decays (exponentially)
            from ``max_scale`` to ``min_scale``; 0 samples from the full range at once.
    """

    def __init__(
        self,
        geometry: ProjectionGeometry,
        patch_size: int = 32,
        min_scale: float = 0.25,
        max_scale: float = 1.0,
        anneal_iterations: int = 2000,
    ) -> None:
        if not 0.0 < min_scale <= max_scale <= 1.0:
            raise GnerfInputError(f"patch scales need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}.")
        if patch_size < 1 or patch_size > min(geometry.detector_shape):
            raise GnerfInputError(f"patch_size {patch_size} must lie in [1, {min(geometry.detector_shape)}].")
        self.geometry = geometry
        self.patch_size = int(patch_size)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.anneal_iterations = int(anneal_iterations)

    def scale_range(self, iteration: int) -> tuple[float, float]:
        """``(low, high)`` scale bounds at a training iteration."""
        if self.anneal_iterations <= 0:
            return self.min_scale, self.max_scale
        progress = min(1.0, iteration / self.anneal_iterations)
        low = self.max_scale * (self.min_scale / self.max_scale) ** progress
        return low, self.max_scale

    def grid(self, scale: torch.Tensor, row0: torch.Tensor, col0: torch.Tensor) -> PatchBatch:
        """Patch coordinates for given scales and top-left offsets (pixel units), all ``(B,)``."""
        n_rows, n_cols = self.geometry.detector_shape
        steps = (torch.arange(self.patch_size, dtype=torch.float32, device=scale.device) + 0.5) / self.patch_size
        r = row0[:, None] + scale[:, None] * n_rows * steps[None] - 0.5
        c = col0[:, None] + scale[:, None] * n_cols * steps[None] - 0.5
        rows = r[:, :, None].expand(-1, -1, self.patch_size).reshape(scale.shape[0], -1)
        cols = c[:, None, :].expand(-1, self.patch_size, -1).reshape(scale.shape[0], -1)
        return PatchBatch(rows=rows, cols=cols, scale=scale)

    def sample(
        self,
        batch_size: int,
        iteration: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> PatchBatch:
        """Random patches: scale uniform in the annealed range, shift uniform inside the view."""
        low, high = self.scale_range(iteration)
        rand = torch.rand(3, batch_size, generator=generator)
        scale = low + (high - low) * rand[0]
        n_rows, n_cols = self.geometry.detector_shape
        row0 = (1.0 - scale) * n_rows * rand[1]
        col0 = (1.0 - scale) * n_cols * rand[2]
        return self.grid(scale.to(device), row0.to(device), col0.to(device))


def sample_image_patches(images: torch.Tensor, patches: PatchBatch) -> torch.Tensor:
    """Bilinear samples ``(B, P*P)`` of full views ``(B, H, W)`` at the patches' pixel positions."""
    n_rows, n_cols = images.shape[-2:]
    x = (patches.cols + 0.5) / n_cols * 2.0 - 1.0
    y = (patches.rows + 0.5) / n_rows * 2.0 - 1.0
    grid = torch.stack([x, y], dim=-1)[:, None]
    return F.grid_sample(images[:, None], grid.to(images.dtype), align_corners=False, padding_mode="border")[:, 0, 0]
