"""A procedural population of anatomical phantoms with exact projections (no downloaded data).

Each subject is an :class:`~monai_gnerf.phantoms.EllipsoidPhantom` drawn deterministically from a
seed and its index: chest-like (body, two lungs, heart, spine, sternum, ribs cage hint by a
denser shell, optional nodules) or knee-like (soft tissue, femur and tibia shafts and condyles,
patella). Sizes, positions, rotations and attenuation values vary within anatomical ranges, so a
generative prior trained on their DRRs learns a distribution, and held-out indices are anatomies
it never saw. Densities use the smooth ``(1 - r^2)^profile`` profile by default: projections are
exact closed forms and free of the silhouette singularity of uniform ellipsoids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from monai_gnerf.data.phantoms import Ellipsoid, EllipsoidPhantom
from monai_gnerf.physics import MU_WATER_PER_MM

__all__ = ["AnatomyKind", "PhantomPopulation"]

AnatomyKind = Literal["chest", "knee"]


class _Draw:
    """Uniform draws from a seeded generator, in physical units."""

    def __init__(self, seed: int) -> None:
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.rng))


def _chest(draw: _Draw) -> tuple[Ellipsoid, ...]:
    w = MU_WATER_PER_MM
    half_width = draw(105.0, 135.0)  # body left-right semi-axis, mm
    depth = half_width * draw(0.6, 0.75)  # antero-posterior semi-axis
    height = draw(150.0, 190.0)
    lung_x, lung_w = half_width * draw(0.4, 0.5), half_width * draw(0.3, 0.4)
    lung_h, lung_z = height * draw(0.6, 0.75), height * draw(0.05, 0.2)
    lung_value = -draw(0.75, 0.88) * w
    heart_size = half_width * draw(0.25, 0.33)
    parts = [
        Ellipsoid((0.0, 0.0, 0.0), (half_width, depth, height), 0.0, draw(1.0, 1.08) * w),
        Ellipsoid((lung_x, 0.0, lung_z), (lung_w, depth * 0.65, lung_h), draw(4.0, 12.0), lung_value),
        Ellipsoid((-lung_x, 0.0, lung_z), (lung_w, depth * 0.65, lung_h), -draw(4.0, 12.0), lung_value),
        Ellipsoid(
            (-half_width * draw(0.05, 0.2), depth * draw(0.15, 0.35), -height * draw(0.05, 0.2)),
            (heart_size, heart_size * draw(0.75, 0.9), heart_size * draw(1.0, 1.25)),
            draw(15.0, 35.0),
            draw(0.7, 0.85) * -lung_value,  # the heart fills lung space: back to soft tissue
        ),
        Ellipsoid(
            (0.0, -depth * draw(0.65, 0.75), 0.0), (draw(11.0, 15.0), draw(11.0, 15.0), height), 0.0, draw(0.8, 1.1) * w
        ),  # spine  # fmt: skip
        Ellipsoid(
            (0.0, depth * draw(0.85, 0.92), height * 0.1), (draw(6.0, 9.0), 4.0, height * 0.45), 0.0, draw(0.6, 0.8) * w
        ),  # sternum  # fmt: skip
    ]
    if draw(0.0, 1.0) < 0.5:  # a nodule in one lung
        side = 1.0 if draw(0.0, 1.0) < 0.5 else -1.0
        r = draw(6.0, 14.0)
        parts.append(Ellipsoid((side * lung_x, draw(-10.0, 10.0), lung_z + draw(-0.4, 0.4) * lung_h), (r, r, r), 0.0,
                               -lung_value * draw(0.8, 1.0)))  # fmt: skip
    return tuple(parts)


def _knee(draw: _Draw) -> tuple[Ellipsoid, ...]:
    w = MU_WATER_PER_MM
    radius = draw(45.0, 60.0)
    bone = draw(1.3, 1.7) * w
    gap = draw(3.0, 8.0)  # joint space, mm
    condyle = radius * draw(0.55, 0.65)
    return (
        Ellipsoid((0.0, 0.0, 0.0), (radius, radius * draw(0.85, 1.0), 160.0), draw(-10.0, 10.0), draw(0.95, 1.05) * w),
        Ellipsoid((0.0, 0.0, condyle + gap / 2 + 70.0), (14.0, 14.0, 90.0), 0.0, bone),  # femur shaft
        Ellipsoid((0.0, 0.0, gap / 2 + condyle * 0.8), (condyle * 1.3, condyle, condyle * 0.8), 0.0, bone),
        Ellipsoid((draw(-3.0, 3.0), 0.0, -(condyle + gap / 2 + 70.0)), (16.0, 16.0, 90.0), 0.0, bone),  # tibia
        Ellipsoid((0.0, 0.0, -(gap / 2 + condyle * 0.6)), (condyle * 1.3, condyle, condyle * 0.6), 0.0, bone),
        Ellipsoid((0.0, radius * draw(0.7, 0.8), draw(5.0, 25.0)), (18.0, 8.0, 20.0), 0.0, bone),  # patella
    )


@dataclass(frozen=True)
class PhantomPopulation:
    """Deterministic random anatomies: subject ``i`` is the same for every call.

    Args:
        kind: ``"chest"`` or ``"knee"``.
        seed: population seed; subjects of different seeds are independent.
        profile: density profile exponent of every ellipsoid (0 = uniform, 1 = smooth).
    """

    kind: AnatomyKind = "chest"
    seed: int = 0
    profile: int = 1

    def subject(self, index: int) -> EllipsoidPhantom:
        """The phantom of subject ``index`` (attenuation in 1/mm, centred at the world origin)."""
        draw = _Draw(self.seed * 1_000_003 + int(index))
        make = {"chest": _chest, "knee": _knee}[self.kind]
        return EllipsoidPhantom(make(draw), self.profile)
