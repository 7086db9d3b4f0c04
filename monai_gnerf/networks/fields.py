"""Attenuation fields: networks mapping normalized volume coordinates to attenuation (1/mm).

Coordinates follow :mod:`monai_gnerf.networks.encodings`: ``-1`` and ``+1`` are the first and
last voxel centres of the reconstruction grid, whose affine places the field in the world (mm).

* :class:`AttenuationField`: any encoding + a small MLP (NAF with a hash grid; a plain NeRF with
  the frequency encoding). Rendered by sampling points along rays.
* :class:`GridAttenuationField`: multi-resolution dense grids summed, no MLP. It evaluates on the
  whole voxel grid cheaply and is rendered with the fast Joseph projector.
* :class:`MaskedField`: any field times a fixed 3D mask (mNeRF): attenuation is exactly zero
  outside the mask, inside the differentiable graph.

All fields share ``forward(points) -> (N,)`` and ``voxels(shape) -> (I, J, K)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_gnerf.physics import MU_WATER_PER_MM

__all__ = ["voxel_centers", "AttenuationField", "GridAttenuationField", "MaskedField"]

_SOFTPLUS_BETA = 10.0  # sharp softplus: non-negative output that can reach (near) zero


def _inverse_softplus(units: torch.Tensor) -> torch.Tensor:
    """The raw value whose sharp softplus is ``units`` (> 0), without overflow for large values:
    ``y + log(1 - exp(-beta y)) / beta``."""
    return units + torch.log(-torch.expm1(-_SOFTPLUS_BETA * units)) / _SOFTPLUS_BETA


def voxel_centers(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Normalized coordinates ``(I*J*K, 3)`` of every voxel centre of a grid, in C order."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class _Field(nn.Module):
    """Shared interface: ``forward`` at points and ``voxels`` on a grid."""

    renders_as_volume = False  # True: evaluate on the grid and project, instead of sampling rays

    def voxels(self, shape: Sequence[int], chunk: int = 1 << 18) -> torch.Tensor:
        """Attenuation (1/mm) at every voxel centre of a grid of ``shape``."""
        device = next(self.parameters()).device
        points = voxel_centers(shape, device)
        values = [self(points[i : i + chunk]) for i in range(0, points.shape[0], chunk)]
        return torch.cat(values).view(*shape)


class AttenuationField(_Field):
    """Encoding + MLP -> non-negative attenuation ``mu`` (1/mm).

    Args:
        encoding: a module with an ``output_size`` property (see ``encodings``).
        hidden_features: MLP width.
        hidden_layers: number of hidden layers.
        scale_per_mm: attenuation of one output unit (default: water, so outputs are O(1)).
    """

    def __init__(
        self,
        encoding: nn.Module,
        hidden_features: int = 64,
        hidden_layers: int = 2,
        scale_per_mm: float = MU_WATER_PER_MM,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        layers: list[nn.Module] = []
        width = int(encoding.output_size)
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.ReLU(inplace=True)]
            width = hidden_features
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.scale_per_mm = scale_per_mm

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        raw = self.mlp(self.encoding(points)).squeeze(-1)
        return self.scale_per_mm * F.softplus(raw, beta=_SOFTPLUS_BETA)


class GridAttenuationField(_Field):
    """Sum of multi-resolution dense grids -> non-negative attenuation (1/mm), no MLP.

    Level ``l`` has shape ``ceil(shape / 2^(levels-1-l))``; the finest equals the reconstruction
    grid. Coarse levels carry low frequencies, so a coarse-to-fine fit is implicit.

    Args:
        shape: reconstruction grid ``(I, J, K)``.
        levels: number of levels (1 = a plain voxel grid).
        scale_per_mm: attenuation of one output unit.
        initial_per_mm: optional initial attenuation on the finest grid (e.g. an FDK result).
    """

    renders_as_volume = True

    def __init__(
        self,
        shape: Sequence[int],
        levels: int = 4,
        scale_per_mm: float = MU_WATER_PER_MM,
        initial_per_mm: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.scale_per_mm = scale_per_mm
        shapes = [tuple(max(2, -(-s // 2 ** (levels - 1 - level))) for s in self.shape) for level in range(levels)]
        self.grids = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, *s)) for s in shapes)
        initial = torch.full(self.shape, 1e-3) if initial_per_mm is None else initial_per_mm.detach().cpu().float()
        with torch.no_grad():  # inverse softplus of the initial value on the finest level
            units = (initial / scale_per_mm).clamp(min=1e-3)
            self.grids[-1].copy_(_inverse_softplus(units)[None, None])

    def _raw_volume(self, shape: Sequence[int]) -> torch.Tensor:
        total = 0.0
        for grid in self.grids:
            same = tuple(grid.shape[2:]) == tuple(shape)
            total = total + (grid if same else F.interpolate(grid, size=tuple(shape), mode="trilinear", align_corners=True))
        return total[0, 0]

    def voxels(self, shape: Sequence[int] | None = None, chunk: int = 0) -> torch.Tensor:
        return self.scale_per_mm * F.softplus(self._raw_volume(shape or self.shape), beta=_SOFTPLUS_BETA)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        grid = points.flip(-1).view(1, -1, 1, 1, 3)
        raw = sum(
            F.grid_sample(g, grid.to(g.dtype), padding_mode="border", align_corners=True).view(-1) for g in self.grids
        )
        return self.scale_per_mm * F.softplus(raw, beta=_SOFTPLUS_BETA)


class MaskedField(_Field):
    """A field multiplied by a fixed binary mask on the reconstruction grid (mNeRF masking).

    Args:
        field: the wrapped field.
        mask: ``(I, J, K)`` mask on the reconstruction grid (non-zero = inside).
    """

    def __init__(self, field: _Field, mask: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.register_buffer("mask", (mask > 0).float())
        self.renders_as_volume = field.renders_as_volume

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        grid = points.flip(-1).view(1, -1, 1, 1, 3)
        inside = F.grid_sample(self.mask[None, None], grid.to(self.mask.dtype), mode="nearest", align_corners=True)
        return self.field(points) * inside.view(-1)

    def voxels(self, shape: Sequence[int] | None = None, chunk: int = 1 << 18) -> torch.Tensor:
        shape = tuple(self.mask.shape) if shape is None else tuple(shape)
        if shape != tuple(self.mask.shape):
            raise ValueError(f"a masked field renders on its mask's grid {tuple(self.mask.shape)}, not {shape}.")
        return self.field.voxels(shape, chunk) * self.mask
