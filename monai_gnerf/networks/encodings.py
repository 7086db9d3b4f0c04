"""Coordinate encodings for neural fields, in plain PyTorch (no CUDA extension to compile).

All encodings take points in normalized volume coordinates ``(N, 3)``, where -1 and +1 are the
centres of the first and last voxel of the reconstruction grid along each axis (the
``align_corners=True`` convention of ``grid_sample``), and return features ``(N, output_size)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrequencyEncoding", "HashGridEncoding", "DenseGridEncoding"]


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding ``[x, sin(2^k pi x), cos(2^k pi x)]`` for ``k < num_frequencies``.

    Args:
        num_frequencies: number of octaves.
        include_input: prepend the raw coordinates.
    """

    def __init__(self, num_frequencies: int = 10, include_input: bool = True) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.include_input = include_input
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False)

    @property
    def output_size(self) -> int:
        return 3 * (2 * self.num_frequencies + int(self.include_input))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        angles = (points[..., None] * self.frequencies).flatten(-2)
        parts = [torch.sin(angles), torch.cos(angles)]
        return torch.cat([points, *parts] if self.include_input else parts, dim=-1)


class HashGridEncoding(nn.Module):
    """Multi-resolution hash-grid encoding (Instant-NGP, as used by NAF), gather-based.

    Level ``l`` has resolution ``floor(base * growth^l)`` with ``growth`` chosen so the last level
    reaches ``max_resolution``; a level whose dense grid fits the table is indexed densely, larger
    ones by a spatial hash. Features are trilinearly interpolated from the 8 surrounding vertices.

    Args:
        levels: number of resolution levels.
        features_per_level: features stored per vertex.
        log2_table_size: log2 of the hash-table entries per level.
        base_resolution: coarsest grid resolution.
        max_resolution: finest grid resolution.
    """

    _PRIMES = (1, 2654435761, 805459861)

    def __init__(
        self,
        levels: int = 8,
        features_per_level: int = 2,
        log2_table_size: int = 15,
        base_resolution: int = 16,
        max_resolution: int = 256,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.features_per_level = features_per_level
        self.table_size = 2**log2_table_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        resolutions = [int(math.floor(base_resolution * growth**level)) for level in range(levels)]
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.long), persistent=False)
        self.tables = nn.Parameter(torch.empty(levels, self.table_size, features_per_level).uniform_(-1e-4, 1e-4))
        corners = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=torch.long)
        self.register_buffer("corners", corners, persistent=False)

    @property
    def output_size(self) -> int:
        return self.levels * self.features_per_level

    def _vertex_index(self, vertex: torch.Tensor, level: int) -> torch.Tensor:
        """Table index of integer vertices ``(..., 3)`` at one level."""
        res = int(self.resolutions[level]) + 1
        if res**3 <= self.table_size:
            return (vertex[..., 0] * res + vertex[..., 1]) * res + vertex[..., 2]
        hashed = vertex[..., 0] * self._PRIMES[0]
        hashed = torch.bitwise_xor(hashed, vertex[..., 1] * self._PRIMES[1])
        hashed = torch.bitwise_xor(hashed, vertex[..., 2] * self._PRIMES[2])
        return hashed % self.table_size

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        unit = ((points + 1.0) * 0.5).clamp(0.0, 1.0)
        features = []
        for level in range(self.levels):
            scaled = unit * self.resolutions[level]
            base = torch.floor(scaled).to(torch.long).clamp(max=int(self.resolutions[level]) - 1)
            frac = scaled - base
            vertices = base[:, None, :] + self.corners  # (N, 8, 3)
            weights = torch.where(self.corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)
            values = self.tables[level][self._vertex_index(vertices, level)]  # (N, 8, F)
            features.append((weights[..., None] * values).sum(1))
        return torch.cat(features, dim=-1)


class DenseGridEncoding(nn.Module):
    """Multi-resolution dense feature grids sampled with ``grid_sample`` (trilinear).

    On CPUs this is faster per step and better than a hash grid of equal memory (no hashing,
    contiguous memory): measured by ``benchmarks/sparse_view.py`` (``--naf`` adds the hash grid).

    Args:
        resolutions: grid size per level (cubic grids).
        features_per_level: channels per level.
    """

    def __init__(self, resolutions: Sequence[int] = (16, 32, 64, 128), features_per_level: int = 4) -> None:
        super().__init__()
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(1, features_per_level, r, r, r).uniform_(-1e-4, 1e-4)) for r in resolutions
        )
        self.features_per_level = features_per_level

    @property
    def output_size(self) -> int:
        return len(self.grids) * self.features_per_level

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        grid = points.flip(-1).view(1, -1, 1, 1, 3)  # grid_sample wants (x=W, y=H, z=D)
        features = [
            F.grid_sample(g, grid.to(g.dtype), mode="bilinear", padding_mode="border", align_corners=True).view(
                g.shape[1], -1
            )
            for g in self.grids
        ]
        return torch.cat(features, dim=0).T
