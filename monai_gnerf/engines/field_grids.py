"""The grid a reconstruction's field is fitted on, and how it maps onto the output grid.

Two rules make it differ from the output grid:

* **Finer** (:func:`field_supersampling`): a detector that resolves finer than an output voxel
  records detail no voxel of that size can hold; the field is fitted as fine as the detector
  resolves and the output is its average over each output voxel.
* **Longer along the rotation axis** (:func:`axial_margins`): the long-object problem. A cone-beam
  ray that crosses an end face of the output box goes on through whatever lies beyond it (the
  rest of a leg, a trunk), and its line integral includes it. Fitted in the box alone, that
  attenuation piles up in the end slices (on a held-out procedural knee with the ``difnet``
  preset at 10 views, 84 % of the squared error sat in the two end slices). The field gets
  margins beyond the end faces that hold it, and the output is cropped from the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from monai_gnerf.geometry import ProjectionGeometry, resample_area, resampled_affine
from monai_gnerf.render import clip_rays_to_box, index_box, world_to_index_rays
from monai_gnerf.transforms import SEEN_LINE_INTEGRAL, visual_hull, voxel_spacing_mm

if TYPE_CHECKING:
    from monai_gnerf.engines.reconstruction import ReconstructionConfig

__all__ = ["FieldGrid", "axial_margins", "field_grid", "field_supersampling", "rotation_grid_axis"]

_MAX_SUPERSAMPLE = 2
_RAYS_PER_SIDE = 64
"""Detector pixels per side (rows, columns) whose rays decide the margins."""
_SAMPLES_BEYOND = 16
"""Points per ray at which a ray passing beyond an end face is tested against the object's footprint."""
_SEEN_FRACTION_EMPTY = 0.01
"""At most this fraction of those rays may see anything (noise) for the space to count as empty."""


@dataclass(frozen=True)
class FieldGrid:
    """A field's grid: the output grid, extended by ``margin`` output voxels before and after along
    ``axis``, then ``factor`` times finer along every axis.

    Attributes:
        output_shape: the output grid ``(I, J, K)``.
        output_affine: its voxel index -> world mm.
        factor: field voxels per output voxel along each axis.
        axis: the output grid's axis nearest the rotation axis.
        margin: output voxels added before and after the output grid along ``axis``.
    """

    output_shape: tuple[int, int, int]
    output_affine: torch.Tensor
    factor: int = 1
    axis: int = 2
    margin: tuple[int, int] = (0, 0)

    @property
    def extended_shape(self) -> tuple[int, ...]:
        """The output grid with its margins, in output voxels."""
        shape = list(self.output_shape)
        shape[self.axis] += sum(self.margin)
        return tuple(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """The field's grid, in field voxels."""
        return tuple(n * self.factor for n in self.extended_shape)

    @property
    def affine(self) -> torch.Tensor:
        """The field grid's voxel index -> world mm."""
        extended = _offset_affine(self.output_affine, self.axis, -self.margin[0])
        return resampled_affine(extended, self.extended_shape, self.shape)

    def _output_region(self) -> tuple[slice, ...]:
        region = [slice(None)] * 3
        start = self.margin[0] * self.factor
        region[self.axis] = slice(start, start + self.output_shape[self.axis] * self.factor)
        return tuple(region)

    def to_output(self, volume: torch.Tensor) -> torch.Tensor:
        """A field-grid volume on the output grid: the margins cropped, each output voxel the average
        of its field voxels."""
        volume = volume[self._output_region()]
        return resample_area(volume, self.output_shape) if self.factor > 1 else volume

    def to_field(self, mask: torch.Tensor) -> torch.Tensor:
        """An output-grid mask on the field grid: each voxel repeated ``factor`` times per axis, the
        margins inside (a mask of the output grid says nothing about what lies beyond it)."""
        extended = torch.ones(self.extended_shape, dtype=mask.dtype, device=mask.device)
        region = [slice(None)] * 3
        region[self.axis] = slice(self.margin[0], self.margin[0] + self.output_shape[self.axis])
        extended[tuple(region)] = mask
        for axis in range(3):
            extended = extended.repeat_interleave(self.factor, dim=axis)
        return extended


def _offset_affine(affine: torch.Tensor, axis: int, voxels: int) -> torch.Tensor:
    """The affine of a grid whose voxel 0 along ``axis`` is voxel ``voxels`` of ``affine``'s grid."""
    moved = torch.as_tensor(affine, dtype=torch.float64).clone()
    moved[:3, 3] += voxels * moved[:3, axis]
    return moved


def field_supersampling(config: ReconstructionConfig, geometry: ProjectionGeometry, affine: torch.Tensor) -> int:
    """How many times finer than the output grid, per axis, a reconstruction's field is.

    ``config.supersample`` when set; else, for ``grid``, the output grid's finest voxel spacing over
    the detector's finest pixel at the isocenter, rounded, from 1 to 2; 1 for the other methods
    (their fields are continuous).
    """
    if config.method != "grid":
        return 1
    if config.supersample is not None:
        return config.supersample
    voxel_mm = min(voxel_spacing_mm(affine))
    pixel_mm = min(geometry.pixel_spacing_at_isocenter_mm)
    return int(min(_MAX_SUPERSAMPLE, max(1, math.floor(voxel_mm / pixel_mm + 0.5))))


def rotation_grid_axis(geometry: ProjectionGeometry, affine: torch.Tensor) -> int:
    """The grid axis most aligned with the scanner's rotation axis."""
    axis = torch.tensor(geometry.rotation_axis, dtype=torch.float64)
    in_index = torch.linalg.solve(torch.as_tensor(affine, dtype=torch.float64)[:3, :3], axis)
    return int((in_index * torch.tensor(voxel_spacing_mm(affine), dtype=torch.float64)).abs().argmax())


def _sampled_rays(
    geometry: ProjectionGeometry, affine: torch.Tensor, projections: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Index-space rays through about ``_RAYS_PER_SIDE``^2 pixels of every view (the first and last
    rows and columns included), and their line integrals when ``projections`` are given."""
    pixels = []
    for n in geometry.detector_shape:
        stride = max(1, math.ceil(n / _RAYS_PER_SIDE))
        pixels.append(torch.unique(torch.cat([torch.arange(0, n, stride), torch.tensor([n - 1])])))
    rows, cols = (c.reshape(1, -1).expand(geometry.num_views, -1).double() for c in torch.meshgrid(*pixels, indexing="ij"))
    tilt = None if geometry.tilt_deg is None else torch.tensor(geometry.tilt_deg, dtype=torch.float64)
    origins, directions = geometry.rays_at(torch.tensor(geometry.angles_deg, dtype=torch.float64), rows, cols, tilt)
    origins, directions = world_to_index_rays(origins.reshape(-1, 3), directions.reshape(-1, 3), affine)
    values = None if projections is None else projections.cpu()[:, pixels[0]][:, :, pixels[1]].reshape(-1)
    return origins, directions, values


def _reach_beyond_faces(
    origins: torch.Tensor, directions: torch.Tensor, shape: Sequence[int], axis: int
) -> tuple[float, float]:
    """How far (voxels) rays that cross the box run past its two end faces along ``axis`` while they
    stay within the box's cross-section (where the object the box was drawn around lies)."""
    lower, upper = index_box(shape)
    t_near, t_far = clip_rays_to_box(origins, directions, lower, upper)
    crossing = t_far > t_near
    lower[axis], upper[axis] = -math.inf, math.inf
    o, d = origins[crossing], directions[crossing]
    t_near, t_far = clip_rays_to_box(o, d, lower, upper)
    ends = torch.cat([o[:, axis] + t_near * d[:, axis], o[:, axis] + t_far * d[:, axis]])
    if ends.numel() == 0:
        return 0.0, 0.0
    cap = float(shape[axis])  # a ray nearly along the axis would ask for an unbounded margin
    low, high = -0.5 - float(ends.min()), float(ends.max()) - (shape[axis] - 0.5)
    return min(cap, max(0.0, low)), min(cap, max(0.0, high))


def _empty_beyond(
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    origins: torch.Tensor,
    directions: torch.Tensor,
    values: torch.Tensor,
    shape: Sequence[int],
    affine: torch.Tensor,
    axis: int,
    side: int,
) -> bool:
    """Whether the projections show that nothing lies beyond one end face: the object does not reach
    the face (its end slice's visual hull is empty), or rays passing beyond the face over the
    object's footprint there see nothing. Those rays clear the box by a detector pixel at the
    isocenter (at least a voxel): a pixel's value averages over its area, so one whose central ray
    grazes the box may still see what is inside."""
    end = 0 if side == 0 else shape[axis] - 1
    slice_shape = list(shape)
    slice_shape[axis] = 1
    footprint = visual_hull(projections, geometry, slice_shape, _offset_affine(affine, axis, end)).squeeze(axis)
    if not footprint.any():
        return True
    clearance = max(1.0, max(geometry.pixel_spacing_at_isocenter_mm) / voxel_spacing_mm(affine)[axis])
    lower, upper = index_box(shape)
    lower[axis] -= clearance
    upper[axis] += clearance
    t_near, t_far = clip_rays_to_box(origins, directions, lower, upper)
    missing = t_far <= t_near
    if side == 0:
        upper[axis], lower[axis] = lower[axis], -math.inf
    else:
        lower[axis], upper[axis] = upper[axis], math.inf
    t_near, t_far = clip_rays_to_box(origins, directions, lower, upper)
    beyond = missing & (t_far > t_near)
    steps = torch.linspace(0.0, 1.0, _SAMPLES_BEYOND, dtype=torch.float64)
    t = t_near[beyond, None] + steps * (t_far - t_near)[beyond, None]
    points = origins[beyond, None] + t[..., None] * directions[beyond, None]
    across = [a for a in range(3) if a != axis]
    index = [points[..., a].round().long().clamp(0, shape[a] - 1) for a in across]
    over = footprint[index[0], index[1]].any(dim=1)
    if not over.any():
        return False  # no ray looked there
    seen = values[beyond][over] > SEEN_LINE_INTEGRAL
    return float(seen.double().mean()) <= _SEEN_FRACTION_EMPTY


def axial_margins(
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    projections: torch.Tensor | None = None,
    margin_mm: float | None = None,
) -> tuple[int, int]:
    """Output voxels to add before and after the output grid along its rotation axis
    (:func:`rotation_grid_axis`), so that the field holds what rays see beyond the end faces.

    Args:
        geometry: the projections' geometry.
        shape: the output grid.
        affine: its voxel index -> world mm.
        projections: line integrals ``(views, rows, cols)``; a face gets no margin when they show
            nothing beyond it (:func:`_empty_beyond`). ``None``: every face that rays cross gets
            one (the upper estimate, for memory checks).
        margin_mm: a fixed margin on both sides, mm (``0`` = none); ``None`` = how far rays that
            cross the box run beyond its end faces within its cross-section (0 for parallel beams
            perpendicular to the axis).
    """
    axis = rotation_grid_axis(geometry, affine)
    if margin_mm is not None:
        voxels = math.ceil(margin_mm / voxel_spacing_mm(affine)[axis] - 1e-9)
        return voxels, voxels
    origins, directions, values = _sampled_rays(geometry, affine, projections)
    reach = _reach_beyond_faces(origins, directions, shape, axis)
    margins = [math.ceil(r - 1e-9) for r in reach]
    if projections is not None:
        for side in (0, 1):
            if margins[side] and _empty_beyond(projections, geometry, origins, directions, values, shape, affine, axis, side):
                margins[side] = 0
    return margins[0], margins[1]


def field_grid(
    config: ReconstructionConfig,
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    projections: torch.Tensor | None = None,
) -> FieldGrid:
    """The grid a reconstruction fits its field on (``fdk``: the output grid itself).

    Args:
        config: the reconstruction's method, ``supersample`` (:func:`field_supersampling`) and
            ``axial_margin_mm`` (:func:`axial_margins`).
        geometry: the projections' geometry.
        shape: the output grid.
        affine: its voxel index -> world mm.
        projections: line integrals; ``None`` gives the largest grid the geometry may need.
    """
    shape = tuple(int(n) for n in shape)
    affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
    axis = rotation_grid_axis(geometry, affine)
    if config.method == "fdk":
        return FieldGrid(shape, affine, 1, axis)
    margin = axial_margins(geometry, shape, affine, projections, config.axial_margin_mm)
    return FieldGrid(shape, affine, field_supersampling(config, geometry, affine), axis, margin)
