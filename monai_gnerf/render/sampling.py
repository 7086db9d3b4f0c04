"""Ray sampling and compositing shared by every renderer: volumes, attenuation fields and generators.

A ray is ``origin + t * direction`` with a unit direction, so ``t`` is in mm. The pieces:

* :func:`world_to_index_rays` maps world rays into a volume's continuous voxel-index space,
  keeping ``t`` in mm (anisotropic voxels need no rescaling);
* :func:`clip_rays_to_box` gives each ray's chord ``[t_near, t_far]`` through a box;
* :func:`sample_rays` splits chords into segments, either of about ``step_mm`` each (a ragged
  batch: short chords cost few samples) or a fixed ``num_samples`` per ray, with midpoints or
  stratified random positions;
* :class:`RaySamples` composites values at the samples, either as the X-ray line integral
  ``sum mu_i delta_i`` or with NeRF alpha compositing ``sum T_i (1 - exp(-sigma_i delta_i)) c_i``.

The trilinear volume projector, the NeRF/NAF reconstruction fields and the generative prior all
render through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RaySamples", "clip_rays_to_box", "index_box", "sample_rays", "sample_volume_at", "world_to_index_rays"]


def world_to_index_rays(
    origins_mm: torch.Tensor, directions: torch.Tensor, affine: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map world rays into continuous voxel-index space; ``t`` keeps its unit (mm)."""
    inv = torch.linalg.inv(torch.as_tensor(affine, dtype=torch.float64))
    lin = inv[:3, :3].to(origins_mm)
    shift = inv[:3, 3].to(origins_mm)
    return origins_mm @ lin.T + shift, directions @ lin.T


def sample_volume_at(volume: torch.Tensor, affine: torch.Tensor, points_mm: torch.Tensor) -> torch.Tensor:
    """Trilinear values of a volume ``(I, J, K)`` at world points ``(..., 3)``; 0 outside the volume.

    Args:
        volume: the voxel values.
        affine: its voxel index -> world mm (4x4).
        points_mm: world points, mm.
    """
    inverse = torch.linalg.inv(torch.as_tensor(affine, dtype=torch.float64).cpu())
    ijk = points_mm.double().cpu() @ inverse[:3, :3].T + inverse[:3, 3]
    sizes = torch.tensor(volume.shape, dtype=torch.float64)
    normalized = ((ijk + 0.5) / sizes * 2.0 - 1.0).flip(-1)  # grid_sample orders coordinates (k, j, i)
    grid = normalized.reshape(1, -1, 1, 1, 3).to(device=volume.device, dtype=torch.float32)
    values = F.grid_sample(volume[None, None].float(), grid, align_corners=False, padding_mode="zeros")
    return values.view(points_mm.shape[:-1]).to(device=points_mm.device, dtype=points_mm.dtype)


def index_box(
    shape: Sequence[int], dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper corners of a grid's voxel box in continuous index space (voxel centres at
    integers): ``-0.5`` and ``shape - 0.5`` on each axis."""
    upper = torch.tensor([float(n) for n in shape], dtype=dtype, device=device) - 0.5
    return torch.full_like(upper, -0.5), upper


def clip_rays_to_box(
    origins: torch.Tensor, directions: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab-method ray/box intersection: entry and exit parameters ``(t_near, t_far)``.

    Rays that miss the box get ``t_far <= t_near``. ``t`` may be negative (parallel-beam rays
    start inside the volume and are integrated over their whole chord).
    """
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (box_min - origins) / safe
    t1 = (box_max - origins) / safe
    t_near = torch.minimum(t0, t1).amax(dim=-1)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, torch.maximum(t_far, t_near)


@dataclass
class RaySamples:
    """Sample points of a batch of rays, stored ray after ray (a ragged batch).

    Attributes:
        points: ``(S, 3)`` sample positions, in the rays' frame.
        delta: ``(S,)`` length (mm) of the segment each sample stands for.
        ray_index: ``(S,)`` the ray of each sample, non-decreasing.
        num_rays: number of rays ``R``.
        samples_per_ray: the count of every ray when all are equal (``num_samples``), else ``None``.
    """

    points: torch.Tensor
    delta: torch.Tensor
    ray_index: torch.Tensor
    num_rays: int
    samples_per_ray: int | None = None

    def line_integral(self, mu: torch.Tensor) -> torch.Tensor:
        """``sum_i mu_i delta_i`` per ray ``(R,)`` of values ``(S,)`` (attenuation, 1/mm)."""
        out = torch.zeros(self.num_rays, dtype=mu.dtype, device=mu.device)
        return out.index_add(0, self.ray_index, mu * self.delta)

    def alpha_composite(self, sigma: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """NeRF compositing per ray ``(R,)``: ``sum_i T_i (1 - exp(-sigma_i delta_i)) value_i``.

        ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` is the transmittance up to sample ``i`` of its
        own ray (a segmented cumulative sum over the ragged batch).
        """
        optical = sigma * self.delta
        if self.samples_per_ray is not None:  # equal counts: an exact per-ray cumulative sum
            optical_rays = optical.view(self.num_rays, self.samples_per_ray)
            before = (torch.cumsum(optical_rays, 1) - optical_rays).reshape(-1)
        else:
            counts = torch.bincount(self.ray_index, minlength=self.num_rays)
            start = torch.cumsum(counts, 0) - counts
            running = torch.cumsum(optical, 0) - optical  # all earlier samples, across rays
            before = running - running[start[self.ray_index]]
        weights = torch.exp(-before) * (1.0 - torch.exp(-optical))
        out = torch.zeros(self.num_rays, dtype=value.dtype, device=value.device)
        return out.index_add(0, self.ray_index, weights * value)


def sample_rays(
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_near: torch.Tensor,
    t_far: torch.Tensor,
    *,
    step_mm: float | None = None,
    num_samples: int | None = None,
    jitter: torch.Generator | None = None,
) -> RaySamples:
    """Split each ray's chord into equal segments and place one sample in each.

    Args:
        origins: ``(R, 3)`` ray origins.
        directions: ``(R, 3)`` unit directions.
        t_near: ``(R,)`` chord start, mm.
        t_far: ``(R,)`` chord end, mm.
        step_mm: segment length: each chord gets ``ceil(chord / step_mm)`` equal segments
            (the midpoint rule with an exact per-ray step).
        num_samples: alternatively, the same number of segments for every ray.
        jitter: random generator: one uniformly random position per segment (stratified
            sampling, for training) instead of the midpoints.

    Returns:
        The samples, ray after ray.
    """
    if (step_mm is None) == (num_samples is None):
        raise ValueError("give exactly one of step_mm and num_samples.")
    chord = (t_far - t_near).clamp(min=0.0)
    if num_samples is not None:
        counts = torch.full_like(chord, int(num_samples), dtype=torch.long)
    else:
        counts = torch.ceil(chord.detach() / step_mm).to(torch.long)
    total = int(counts.sum())
    ray_index = torch.repeat_interleave(torch.arange(origins.shape[0], device=origins.device), counts)
    first = torch.cumsum(counts, 0) - counts
    k = torch.arange(total, device=origins.device) - first[ray_index]
    seg = (chord / counts.clamp(min=1))[ray_index]
    offset = 0.5 if jitter is None else torch.rand(total, generator=jitter, dtype=origins.dtype).to(origins.device)
    t = t_near[ray_index] + (k.to(origins.dtype) + offset) * seg
    points = origins[ray_index] + t[:, None] * directions[ray_index]
    return RaySamples(points, seg, ray_index, origins.shape[0], None if num_samples is None else int(num_samples))
