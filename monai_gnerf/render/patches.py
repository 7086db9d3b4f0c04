"""GRAF's patch ray sampler: patches of continuous detector positions, real and generated alike.

A generative radiance field is trained on small patches of full views: ``P x P`` rays spread
over a square of ``scale`` times the detector (scale 1: the whole view, strided), shifted at
random. Real patches are read from the same continuous pixel positions of the training views by
bilinear interpolation, so real and generated patches see the same anatomy at the same scale.

Pixel coordinates follow :class:`~monai_gnerf.geometry.ProjectionGeometry`: pixel centres sit at
integer ``(row, col)``; rows run along ``v`` and columns along ``u``. The rays of a patch come
from :meth:`~monai_gnerf.geometry.ProjectionGeometry.rays_at`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry

__all__ = ["PatchRaySampler", "PatchBatch", "sample_image_patches"]


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
