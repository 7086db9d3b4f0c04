"""Analytic ellipsoid phantoms with closed-form X-ray line integrals.

A phantom is a sum of ellipsoids, each adding ``value * (1 - r^2)^profile`` (1/mm) inside it,
where ``r`` is the normalized ellipsoidal radius. ``profile = 0`` gives the classic uniform
ellipsoids of the Shepp-Logan phantom; ``profile >= 1`` gives smooth densities that vanish at
the surface. Line integrals are exact for any ``profile``:

    integral over the chord = value * a^p * h^(2p+1) * B(1/2, p+1),

with ``a = |d'|^2`` and ``h`` the half-chord in the ellipsoid's unit-sphere frame. Uniform
ellipsoids project with an infinite slope at their silhouette, which no sampled volume can match
pixel by pixel; the smooth profiles are the ground truth for tight pointwise DRR tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import torch
from monai.data import MetaTensor

from monai_gnerf.geometry import voxel_world_points
from monai_gnerf.physics import MU_WATER_PER_MM

__all__ = ["Ellipsoid", "EllipsoidPhantom", "shepp_logan_phantom", "chest_phantom", "grid_affine", "centered_grid"]


@dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid in world mm.

    Args:
        center_mm: centre ``(x, y, z)`` in mm.
        semi_axes_mm: semi-axis lengths along its own axes, mm.
        angle_deg: rotation of its axes about the world z axis, degrees.
        value: added attenuation at its centre, 1/mm (may be negative).
    """

    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    angle_deg: float
    value: float

    def _to_unit_frame(self, points: torch.Tensor) -> torch.Tensor:
        """Map world vectors (already centred, or directions) into the unit-sphere frame."""
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=points.dtype, device=points.device)
        axes = torch.tensor(self.semi_axes_mm, dtype=points.dtype, device=points.device)
        return (points @ rot) / axes

    @property
    def bounding_radius_mm(self) -> float:
        """Radius of the smallest centred sphere holding the ellipsoid, mm."""
        return max(self.semi_axes_mm)


@dataclass(frozen=True)
class EllipsoidPhantom:
    """A sum of ellipsoids with a shared density profile exponent (0 = uniform)."""

    ellipsoids: tuple[Ellipsoid, ...]
    profile: int = 0

    def with_profile(self, profile: int) -> EllipsoidPhantom:
        """The same ellipsoids with another density profile exponent."""
        return replace(self, profile=int(profile))

    def density(self, points_mm: torch.Tensor) -> torch.Tensor:
        """Attenuation (1/mm) at world points ``(..., 3)``."""
        points = points_mm.reshape(-1, 3)
        total = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
        for e, centre, near in _near_each(self.ellipsoids, points):
            r2 = (e._to_unit_frame(points[near] - centre.to(points.dtype)) ** 2).sum(-1)
            total.index_add_(0, near, e.value * torch.clamp(1.0 - r2, min=0.0) ** self.profile * (r2 < 1.0))
        return total.view(points_mm.shape[:-1])

    def line_integrals(self, origins_mm: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Exact line integrals along whole rays (unit directions in mm), shape ``origins.shape[:-1]``.

        Each ellipsoid is integrated only along the rays that pass through its bounding sphere.
        """
        p = self.profile
        beta = math.sqrt(math.pi) * math.gamma(p + 1) / math.gamma(p + 1.5)
        o_all, d_all = origins_mm.reshape(-1, 3), directions.reshape(-1, 3)
        total = torch.zeros(o_all.shape[0], dtype=o_all.dtype, device=o_all.device)
        for e, centre, near in _near_each(self.ellipsoids, o_all, d_all):
            o = e._to_unit_frame(o_all[near] - centre.to(o_all.dtype))
            d = e._to_unit_frame(d_all[near])
            a = (d * d).sum(-1)
            b = (o * d).sum(-1)
            r2_min = (o * o).sum(-1) - b * b / a
            h = torch.sqrt(torch.clamp(1.0 - r2_min, min=0.0) / a)
            total.index_add_(0, near, e.value * beta * a**p * h ** (2 * p + 1))
        return total.view(origins_mm.shape[:-1])

    def voxelize(
        self, shape: Sequence[int], spacing_mm: Sequence[float], supersample: int = 1, dtype: torch.dtype = torch.float32
    ) -> MetaTensor:
        """Sample on a grid centred on the world origin, averaging ``supersample^3`` points per voxel.

        Returns:
            ``MetaTensor`` of attenuation (1/mm), shape ``shape``, with its RAS affine.
        """
        affine = grid_affine(shape, spacing_mm)
        offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
        axes = [torch.arange(n, dtype=torch.float64) for n in shape]
        out = torch.zeros(tuple(shape), dtype=torch.float64)
        for di in offsets:
            for dj in offsets:
                for dk in offsets:
                    grid = torch.stack(torch.meshgrid(axes[0] + di, axes[1] + dj, axes[2] + dk, indexing="ij"), -1)
                    points = grid @ affine[:3, :3].T + affine[:3, 3]
                    out += self.density(points)
        return MetaTensor((out / supersample**3).to(dtype), affine=affine)


def _near_each(
    ellipsoids: Sequence[Ellipsoid], points_mm: torch.Tensor, directions: torch.Tensor | None = None
) -> Iterator[tuple[Ellipsoid, torch.Tensor, torch.Tensor]]:
    """Each ellipsoid with its centre (float64) and the indices of the points ``(N, 3)`` inside its
    bounding sphere or, given unit ``directions``, of the rays ``points + t directions`` through it.

    The squared distance of a centre ``c`` from a point is ``|p|^2 - 2 p.c + |c|^2``, and from a ray
    that minus ``((p - c).d)^2``: the terms without ``c`` are computed once for all ellipsoids, in
    float64 so the expansion does not cancel away grazing rays.
    """
    p = points_mm.double()
    base = (p * p).sum(-1)
    d = None if directions is None else directions.double()
    along = None if d is None else (p * d).sum(-1)
    for e in ellipsoids:
        c = torch.tensor(e.center_mm, dtype=torch.float64, device=p.device)
        squared = base - 2.0 * (p @ c) + c @ c
        if d is not None:
            squared = squared - (along - d @ c) ** 2
        yield e, c, (squared < (e.bounding_radius_mm * (1.0 + 1e-6)) ** 2).nonzero().squeeze(-1)


def grid_affine(shape: Sequence[int], spacing_mm: Sequence[float]) -> torch.Tensor:
    """Axis-aligned RAS affine (float64) of a grid whose centre sits at the world origin."""
    affine = torch.eye(4, dtype=torch.float64)
    for axis, (n, s) in enumerate(zip(shape, spacing_mm)):
        affine[axis, axis] = float(s)
        affine[axis, 3] = -(n - 1) / 2.0 * float(s)
    return affine


def centered_grid(shape: Sequence[int], spacing_mm: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """World positions (mm, float64) of the voxel centres ``(I, J, K, 3)`` of a grid centred on the
    origin, and its :func:`grid_affine` (e.g. a generator's scene cube, the isocenter at 0)."""
    affine = grid_affine(shape, spacing_mm)
    return voxel_world_points(shape, affine).view(*shape, 3), affine


def _scaled(rows: Sequence[tuple[float, ...]], size_mm: float) -> tuple[Ellipsoid, ...]:
    """Ellipsoids from rows ``(x, y, z, a, b, c, angle_deg, value)`` in units of ``size_mm``."""
    return tuple(
        Ellipsoid((x * size_mm, y * size_mm, z * size_mm), (a * size_mm, b * size_mm, c * size_mm), ang, val)
        for x, y, z, a, b, c, ang, val in rows
    )


def shepp_logan_phantom(size_mm: float = 100.0, profile: int = 0) -> EllipsoidPhantom:
    """A 3D Shepp-Logan-like head: skull, brain, ventricles and small lesions.

    Geometry follows the classic layout (half-size ``size_mm``); values are physical attenuation
    in 1/mm (skull ~ 2 * water, brain ~ water), so DRRs have realistic magnitudes.
    """
    w = MU_WATER_PER_MM
    rows = [
        (0.0, 0.0, 0.0, 0.69, 0.92, 0.90, 0.0, 2.0 * w),
        (0.0, -0.0184, 0.0, 0.6624, 0.874, 0.88, 0.0, -1.0 * w),
        (0.22, 0.0, -0.25, 0.11, 0.31, 0.22, -18.0, -0.2 * w),
        (-0.22, 0.0, -0.25, 0.16, 0.41, 0.28, 18.0, -0.2 * w),
        (0.0, 0.35, -0.25, 0.21, 0.25, 0.41, 0.0, 0.1 * w),
        (0.0, 0.1, -0.25, 0.046, 0.046, 0.05, 0.0, 0.1 * w),
        (-0.08, -0.605, -0.25, 0.046, 0.023, 0.05, 0.0, 0.1 * w),
        (0.06, -0.605, -0.25, 0.046, 0.023, 0.02, 0.0, 0.1 * w),
        (0.0, -0.1, -0.25, 0.046, 0.046, 0.05, 0.0, 0.1 * w),
        (0.06, -0.105, 0.625, 0.056, 0.04, 0.1, 0.0, 0.2 * w),
    ]
    return EllipsoidPhantom(_scaled(rows, size_mm), profile)


def chest_phantom(size_mm: float = 150.0, profile: int = 0) -> EllipsoidPhantom:
    """A simple chest: soft-tissue body, two lungs, heart, spine and sternum (RAS mm, 1/mm).

    ``size_mm`` is the body's left-right semi-axis; anterior is +y, superior is +z.
    """
    w = MU_WATER_PER_MM
    rows = [
        (0.0, 0.0, 0.0, 1.0, 0.68, 1.2, 0.0, 1.04 * w),  # body, soft tissue ~ +40 HU
        (0.45, 0.02, 0.15, 0.36, 0.45, 0.85, 8.0, -0.84 * w),  # right lung (RAS: +x is the patient right)
        (-0.45, 0.02, 0.15, 0.36, 0.45, 0.85, -8.0, -0.84 * w),  # left lung, lung ~ -800 HU
        (-0.12, 0.18, -0.1, 0.3, 0.25, 0.32, 25.0, 0.02 * w),  # heart, blood ~ +60 HU
        (0.0, -0.5, 0.0, 0.09, 0.09, 1.15, 0.0, 0.9 * w),  # spine, cancellous + cortical bone
        (0.0, 0.62, 0.1, 0.05, 0.03, 0.45, 0.0, 0.7 * w),  # sternum
    ]
    return EllipsoidPhantom(_scaled(rows, size_mm), profile)
