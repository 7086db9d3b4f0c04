"""A procedural population of anatomical phantoms with exact projections (no downloaded data).

Each subject is an :class:`~monai_gnerf.data.phantoms.EllipsoidPhantom` drawn deterministically
from a seed and its index: chest-like, as a chest CT holds it (the trunk through the whole scene
with fat and muscle layers, lungs carved by diaphragm domes, heart and aortic knob, hilar vessels,
vertebrae with spinous processes, sternum, ten pairs of ribs, clavicles, scapulae, sometimes
breasts and a nodule, bowel gas, and the table) or knee-like (soft tissue, femur and tibia with
marrow cavities, fibula, condyles, patella). Sizes, positions, rotations and attenuation values
vary within adult anatomical ranges, so a generative prior trained on their DRRs learns a
distribution, and held-out indices are anatomies it never saw. Compartments are uniform by
default (``profile=0``: sharp organ boundaries, as in CT); projections are exact closed forms for
any profile.

Subject indices of a population are split by convention: training subjects are drawn from 0,
held-out test subjects from :data:`HELD_OUT_START` and validation subjects (calibration, choices
made before testing) from :data:`VALIDATION_START`, so no split ever sees another's anatomy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

from monai_gnerf.data.examples import resolve_ct_path
from monai_gnerf.data.phantoms import Ellipsoid, EllipsoidPhantom, grid_affine
from monai_gnerf.geometry import volume_center_mm
from monai_gnerf.io import load_ct
from monai_gnerf.physics import MU_WATER_PER_MM, hu_to_attenuation
from monai_gnerf.render import VolumeProjector, sample_volume_at, world_to_index_rays

__all__ = [
    "HELD_OUT_START",
    "SCENE_HALF_SIZE_MM",
    "VALIDATION_START",
    "AnatomyKind",
    "CTPopulation",
    "PhantomPopulation",
    "VolumeSubject",
]

AnatomyKind = Literal["chest", "knee"]
HELD_OUT_START = 10_000  # first held-out (test) subject index of a population
VALIDATION_START = 20_000  # first validation subject index of a population


class _Draw:
    """Uniform draws from a seeded generator, in physical units."""

    def __init__(self, seed: int) -> None:
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.rng))


def _rib_cage(draw: _Draw, half_width: float, depth: float, top_z: float, bottom_z: float) -> list[Ellipsoid]:
    """Ten pairs of ribs: arcs of short bony segments from the spine around the side to the front.

    Each rib follows the body's axial ellipse (a little inside it) from behind the spine to the
    front, dropping ``slope`` mm from its posterior to its anterior end, as ribs slope downwards.
    """
    bone = draw(0.75, 0.95) * MU_WATER_PER_MM
    ribs = []
    pairs, segments = 10, 7
    slope = draw(25.0, 45.0)
    for k in range(pairs):
        z_back = top_z - (top_z - bottom_z) * k / (pairs - 1)
        reach = 0.55 + 0.35 * math.sin(math.pi * (k + 1) / (pairs + 1))  # short upper and lower ribs
        for side in (1.0, -1.0):
            for m in range(segments):
                frac = (m + 0.5) / segments
                phi = math.radians(-80.0 + 170.0 * frac * reach)  # from beside the spine (-80) to the front
                x = side * 0.9 * half_width * math.cos(phi)
                y = 0.9 * depth * math.sin(phi)
                tangent = math.degrees(math.atan2(0.9 * depth * math.cos(phi), -side * 0.9 * half_width * math.sin(phi)))
                length = 0.5 * 170.0 * reach / segments * math.pi / 180.0 * 0.9 * (half_width + depth) / 2.0
                ribs.append(Ellipsoid((x, y, z_back - slope * frac * reach), (length * 1.2, 5.0, 6.5), tangent, bone))
    return ribs


def _vessels(draw: _Draw, side: float, lung_x: float, lung_z: float, lung_h: float, value: float) -> list[Ellipsoid]:
    """Hilar vessels: a few soft-tissue branches fanning out of the hilum into one lung."""
    hilum = (side * lung_x * 0.45, draw(-5.0, 10.0), lung_z + draw(-0.1, 0.1) * lung_h)
    branches = []
    for angle in (-50.0, -15.0, 20.0, 55.0):
        length = draw(25.0, 45.0)
        direction = math.radians(angle + draw(-10.0, 10.0))
        dx, dz = side * math.cos(direction) * length, math.sin(direction) * length
        centre = (hilum[0] + dx, hilum[1], hilum[2] + dz)
        branches.append(Ellipsoid(centre, (length, draw(3.0, 5.0), draw(3.0, 5.0)), 0.0, value))
        # branches run in the coronal plane; the z rotation cannot tilt them, so stagger a second piece
        branches.append(Ellipsoid((hilum[0] + 0.5 * dx, hilum[1], hilum[2] + 0.5 * dz), (length * 0.5, 4.0, 6.0), 0.0,
                                  value))  # fmt: skip
    return branches


_TRUNK_HALF_LENGTH_MM = 700.0  # a chest CT cuts the trunk: body and table run through the whole scene
_SCENE_HALF_HEIGHT_MM = 190.0  # the levels the scene holds: vertebrae run through them, gas lies within


def _dome(lung: Ellipsoid, drop: float, value: float) -> Ellipsoid:
    """A diaphragm dome carved out of a lung's base: inside the lung, so it cancels lung exactly.

    The dome has the lung's orientation and ``(0.72, 0.72, 0.3)`` of its semi-axes, centred ``drop``
    lung half-heights below the lung's centre; for ``drop <= 0.63`` every point of it lies inside
    the lung (the largest ``|u|^2`` over it is ``0.518 + 1.21 drop^2 <= 1``), so the lung keeps
    its lateral and posterior recesses around the dome and no soft tissue is counted twice.
    """
    a, b, c = lung.semi_axes_mm
    x, y, z = lung.center_mm
    return Ellipsoid((x, y, z - drop * c), (0.72 * a, 0.72 * b, 0.3 * c), lung.angle_deg, value)


def _gas(draw: _Draw, half_width: float, depth: float, below_z: float) -> list[Ellipsoid]:
    """A few bowel-gas pockets in the upper abdomen, below the diaphragm."""
    pockets = []
    for _ in range(int(draw(2.0, 6.99))):
        r = draw(8.0, 20.0)
        centre = (draw(-0.6, 0.4) * half_width, draw(-0.2, 0.5) * depth, draw(-_SCENE_HALF_HEIGHT_MM, below_z))
        pockets.append(Ellipsoid(centre, (r * draw(1.0, 1.6), r, r), draw(0.0, 90.0), -draw(0.6, 0.9) * MU_WATER_PER_MM))
    return pockets


def _chest(draw: _Draw) -> tuple[Ellipsoid, ...]:
    """A chest as a chest CT holds it: the trunk through the whole scene (fat and muscle layers),
    lungs carved by diaphragm domes, heart and aortic knob, hilar vessels, vertebrae, sternum,
    ribs, clavicles, scapulae, sometimes breasts and a nodule, bowel gas below the diaphragm, and
    the table under the patient's back. Adult proportions: 270-340 mm left-right, 65-85 % of that
    antero-posterior, lungs 210-270 mm tall with their apices near the top of the scene."""
    w = MU_WATER_PER_MM
    half_width = draw(135.0, 170.0)  # body left-right semi-axis, mm
    depth = half_width * draw(0.65, 0.85)  # antero-posterior semi-axis
    fat = draw(8.0, 20.0)  # subcutaneous fat thickness, mm
    lung_x, lung_w = half_width * draw(0.42, 0.5), half_width * draw(0.33, 0.42)
    lung_h = draw(105.0, 135.0)
    lung_z = draw(110.0, 150.0) - lung_h  # apex 110-150 mm above the isocenter
    lung_value = -draw(0.75, 0.88) * w
    heart_size = half_width * draw(0.25, 0.33)
    trunk = _TRUNK_HALF_LENGTH_MM
    parts = [
        Ellipsoid((0.0, 0.0, 0.0), (half_width, depth, trunk), 0.0, draw(0.9, 0.95) * w),  # fat-density body
        Ellipsoid((0.0, 0.0, 0.0), (half_width - fat, depth - fat, trunk), 0.0, draw(0.08, 0.14) * w),  # muscle
    ]
    for side, tilt, drop in ((1.0, draw(4.0, 12.0), draw(0.5, 0.57)), (-1.0, -draw(4.0, 12.0), draw(0.56, 0.63))):
        lung = Ellipsoid((side * lung_x, -0.05 * depth, lung_z), (lung_w, depth * draw(0.7, 0.8), lung_h), tilt, lung_value)
        parts += [lung, _dome(lung, drop, -lung_value)]  # the right (+x) dome over the liver sits higher
    parts += [
        Ellipsoid(
            (-half_width * draw(0.05, 0.2), depth * draw(0.15, 0.35), lung_z - lung_h * draw(0.3, 0.45)),
            (heart_size, heart_size * draw(0.75, 0.9), heart_size * draw(1.0, 1.25)),
            draw(15.0, 35.0),
            -lung_value,  # the heart fills lung space: back to soft tissue
        ),
        Ellipsoid((half_width * draw(0.08, 0.16), -depth * 0.1, lung_z + lung_h * draw(0.35, 0.5)),
                  (draw(14.0, 20.0), 14.0, draw(14.0, 20.0)), 0.0, 0.8 * -lung_value),  # fmt: skip  # aortic knob
        Ellipsoid((0.0, depth * draw(0.85, 0.92), lung_z), (draw(6.0, 9.0), 4.0, lung_h * 0.8), 0.0,
                  draw(0.6, 0.8) * w),  # fmt: skip  # sternum
    ]
    for side in (1.0, -1.0):
        parts += _vessels(draw, side, lung_x, lung_z, lung_h, 0.7 * -lung_value)
    vertebra_h, spine_y = draw(11.0, 13.0), -depth * draw(0.65, 0.75)
    spine_r, bone = draw(12.0, 16.0), draw(0.8, 1.1) * w
    z = _SCENE_HALF_HEIGHT_MM
    while z > -_SCENE_HALF_HEIGHT_MM:  # vertebral bodies separated by discs
        parts.append(Ellipsoid((0.0, spine_y, z), (spine_r, spine_r * 0.85, vertebra_h), 0.0, bone))
        parts.append(Ellipsoid((0.0, spine_y - spine_r * 1.3, z), (6.0, spine_r * 0.6, vertebra_h * 0.8), 0.0,
                               0.6 * bone))  # fmt: skip  # spinous process
        z -= 2.0 * vertebra_h + draw(5.0, 8.0)
    parts += _rib_cage(draw, half_width, depth, lung_z + lung_h * 0.85, lung_z - lung_h * 0.9)
    top = lung_z + lung_h
    for side in (1.0, -1.0):
        tilt = side * draw(8.0, 18.0)
        parts.append(Ellipsoid((side * half_width * 0.42, depth * 0.55, top + draw(0.0, 15.0)),
                               (half_width * 0.42, 7.0, 6.0), tilt * 0.3, draw(0.9, 1.1) * w))  # fmt: skip  # clavicle
        parts.append(Ellipsoid((side * half_width * 0.68, -depth * 0.55, top - draw(40.0, 70.0)),
                               (draw(40.0, 55.0), 5.0, draw(55.0, 75.0)), side * draw(20.0, 35.0),
                               draw(0.5, 0.7) * w))  # fmt: skip  # scapula
    if draw(0.0, 1.0) < 0.4:  # breasts
        size = draw(35.0, 60.0)
        for side in (1.0, -1.0):
            parts.append(Ellipsoid((side * half_width * 0.45, depth + size * 0.3, lung_z - lung_h * 0.4),
                                   (size, size * 0.7, size * 0.85), 0.0, draw(0.9, 1.0) * w))  # fmt: skip
    if draw(0.0, 1.0) < 0.5:  # a nodule in one lung
        side = 1.0 if draw(0.0, 1.0) < 0.5 else -1.0
        r = draw(6.0, 14.0)
        parts.append(Ellipsoid((side * lung_x, draw(-10.0, 10.0), lung_z + draw(0.0, 0.5) * lung_h), (r, r, r), 0.0,
                               -lung_value * draw(0.8, 1.0)))  # fmt: skip
    parts += _gas(draw, half_width, depth, lung_z - lung_h)
    parts.append(Ellipsoid((0.0, -depth - draw(15.0, 25.0), 0.0), (185.0, 7.0, trunk), 0.0, draw(0.25, 0.4) * w))  # table
    return tuple(parts)


def _knee(draw: _Draw) -> tuple[Ellipsoid, ...]:
    """A knee: fat and muscle, femur and tibia shafts with marrow cavities, condyles, fibula, patella."""
    w = MU_WATER_PER_MM
    radius = draw(45.0, 60.0)
    bone = draw(1.3, 1.7) * w
    gap = draw(3.0, 8.0)  # joint space, mm
    condyle = radius * draw(0.55, 0.65)
    femur_z, tibia_z = condyle + gap / 2 + 70.0, -(condyle + gap / 2 + 70.0)
    return (
        Ellipsoid((0.0, 0.0, 0.0), (radius, radius * draw(0.85, 1.0), 160.0), draw(-10.0, 10.0), draw(0.9, 0.95) * w),
        Ellipsoid((0.0, 0.0, 0.0), (radius - 8.0, radius * 0.8, 160.0), 0.0, draw(0.06, 0.12) * w),  # muscle
        Ellipsoid((0.0, 0.0, femur_z), (14.0, 14.0, 90.0), 0.0, bone),  # femur shaft
        Ellipsoid((0.0, 0.0, femur_z + 10.0), (8.0, 8.0, 80.0), 0.0, -0.6 * bone),  # its marrow cavity
        Ellipsoid((0.0, 0.0, gap / 2 + condyle * 0.8), (condyle * 1.3, condyle, condyle * 0.8), 0.0, bone),
        Ellipsoid((draw(-3.0, 3.0), 0.0, tibia_z), (16.0, 16.0, 90.0), 0.0, bone),  # tibia
        Ellipsoid((0.0, 0.0, tibia_z - 10.0), (9.0, 9.0, 80.0), 0.0, -0.6 * bone),  # its marrow cavity
        Ellipsoid((0.0, 0.0, -(gap / 2 + condyle * 0.6)), (condyle * 1.3, condyle, condyle * 0.6), 0.0, bone),
        Ellipsoid((radius * draw(0.45, 0.55), -radius * 0.2, tibia_z + 10.0), (6.0, 6.0, 85.0), 0.0, bone),  # fibula
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
    profile: int = 0

    def subject(self, index: int) -> EllipsoidPhantom:
        """The phantom of subject ``index`` (attenuation in 1/mm, centred at the world origin)."""
        draw = _Draw(self.seed * 1_000_003 + int(index))
        make = {"chest": _chest, "knee": _knee}[self.kind]
        return EllipsoidPhantom(make(draw), self.profile)


class VolumeSubject:
    """A subject given as an attenuation grid centred on the isocenter (the world origin).

    It answers what an :class:`~monai_gnerf.data.phantoms.EllipsoidPhantom` answers, so the same
    view dataset serves both: ``density`` (trilinear) and ``line_integrals`` (Joseph projector).

    Args:
        attenuation: ``(I, J, K)`` attenuation, 1/mm.
        affine: voxel index -> world mm, the isocenter at the origin.
    """

    def __init__(self, attenuation: torch.Tensor, affine: torch.Tensor) -> None:
        self.attenuation, self.affine = attenuation, affine
        self.projector = VolumeProjector(attenuation, affine)

    def density(self, points_mm: torch.Tensor) -> torch.Tensor:
        """Attenuation (1/mm) at points ``(..., 3)``."""
        return sample_volume_at(self.attenuation, self.affine, points_mm)

    def line_integrals(self, origins_mm: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Line integrals along whole rays, shape ``origins.shape[:-1]``."""
        o, d = world_to_index_rays(origins_mm.reshape(-1, 3), directions.reshape(-1, 3), self.affine)
        with torch.no_grad():
            values = self.projector.integrate(o.float(), d.float())
        return values.view(origins_mm.shape[:-1]).to(origins_mm.dtype)


@lru_cache(maxsize=8)
def _attenuation_of(path: str, mu_water_per_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A CT's attenuation (1/mm) and its affine shifted so the volume centre is the origin (loaded once)."""
    ct = load_ct(path)
    affine = torch.as_tensor(ct.affine, dtype=torch.float64).clone()
    affine[:3, 3] -= volume_center_mm(affine, ct.shape)
    return hu_to_attenuation(ct.as_tensor().float(), mu_water_per_mm), affine


SCENE_HALF_SIZE_MM = 200.0
"""Half-size of the cube around the isocenter that a generator's scene fills, mm: the default of
:class:`~monai_gnerf.networks.GeneratorConfig` ``extent_mm`` and of the cube varied CTs are
resampled onto (:class:`CTPopulation`)."""


@dataclass(frozen=True)
class CTPopulation:
    """Random variations of a few CTs: a population a prior can learn from when CTs are scarce.

    Subject ``i`` is CT ``i mod len(cts)`` resampled onto a cube centred on its volume centre
    through a random affine map (per-axis scale, rotation about the body axis, translation), a
    smooth random elastic displacement (a ``4^3`` grid of Gaussian displacements, trilinearly
    interpolated) and a random attenuation gain. Draws are deterministic in ``seed`` and ``i``.

    Args:
        cts: CT files or DICOM folders (``example``: the embedded chest CT).
        seed: population seed.
        grid_size: voxels per side of each subject's grid.
        extent_mm: half-size of the cube, mm (the generator's scene cube).
        scale: largest relative change of each axis' scale.
        rotation_deg: largest rotation about the body (z) axis, degrees.
        translation_mm: largest shift along each axis, mm.
        elastic_mm: standard deviation of the elastic displacements, mm.
        gain: largest relative change of the attenuation.
        mu_water_per_mm: attenuation of water for HU -> 1/mm.
    """

    cts: tuple[str, ...] = ("example",)
    seed: int = 0
    grid_size: int = 96
    extent_mm: float = SCENE_HALF_SIZE_MM
    scale: float = 0.08
    rotation_deg: float = 6.0
    translation_mm: float = 10.0
    elastic_mm: float = 6.0
    gain: float = 0.06
    mu_water_per_mm: float = MU_WATER_PER_MM

    def subject(self, index: int) -> VolumeSubject:
        """The varied CT of subject ``index`` (attenuation in 1/mm on a cube centred at the origin)."""
        draw = _Draw(self.seed * 1_000_003 + int(index))
        mu, ct_affine = _attenuation_of(str(resolve_ct_path(self.cts[int(index) % len(self.cts)])), self.mu_water_per_mm)
        n = self.grid_size
        affine = grid_affine((n, n, n), (2.0 * self.extent_mm / n,) * 3)
        axes = [torch.arange(n, dtype=torch.float64)] * 3
        ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
        points = ijk @ affine[:3, :3].T + affine[:3, 3]
        source = self._warp(points, draw)
        varied = sample_volume_at(mu, ct_affine, source).float() * (1.0 + draw(-self.gain, self.gain))
        return VolumeSubject(varied, affine)

    def _warp(self, points: torch.Tensor, draw: _Draw) -> torch.Tensor:
        """Where each subject point ``(n, n, n, 3)`` takes its value from in the CT (inverse map)."""
        angle = math.radians(draw(-self.rotation_deg, self.rotation_deg))
        c, s = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        scales = torch.tensor([1.0 + draw(-self.scale, self.scale) for _ in range(3)], dtype=torch.float64)
        shift = torch.tensor([draw(-self.translation_mm, self.translation_mm) for _ in range(3)], dtype=torch.float64)
        source = ((points - shift) @ rotation) / scales
        coarse = torch.randn(1, 3, 4, 4, 4, generator=draw.rng, dtype=torch.float64) * self.elastic_mm
        field = torch.nn.functional.interpolate(coarse, size=points.shape[:3], mode="trilinear", align_corners=True)
        return source + field[0].permute(1, 2, 3, 0)
