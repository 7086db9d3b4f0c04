"""Grids: shapes and affines (voxel index -> world mm) of volumes and projection stacks, and resampling."""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F

from monai_gnerf.errors import GeometryError
from monai_gnerf.geometry.projection import ProjectionGeometry

__all__ = [
    "grid_detector_coordinates",
    "check_source_outside",
    "check_volume_in_beam",
    "volume_center_mm",
    "projection_affine",
    "voxel_world_points",
    "resampled_affine",
    "grid_for_spacing",
    "geometry_grid",
    "resample_area",
    "resample_nearest",
]

_LOGGER = logging.getLogger(__name__)


def volume_center_mm(affine: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """World position (mm) of the centre of a volume's voxel box."""
    center_idx = torch.tensor([(n - 1) / 2.0 for n in shape] + [1.0], dtype=torch.float64)
    return (torch.as_tensor(affine, dtype=torch.float64) @ center_idx)[:3]


def projection_affine(geometry: ProjectionGeometry) -> torch.Tensor:
    """4x4 affine of a projection stack ``(views, rows, cols)``: view index, then row and column mm."""
    return torch.diag(torch.tensor([1.0, *geometry.pixel_spacing_mm, 1.0], dtype=torch.float64))


def voxel_world_points(shape: Sequence[int], affine: torch.Tensor) -> torch.Tensor:
    """World positions (mm, float64) of all voxel centres of a grid, ``(I*J*K, 3)`` in C order."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), -1)
    return index.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]


def grid_detector_coordinates(
    geometry: ProjectionGeometry, view: int, shape: Sequence[int], affine: torch.Tensor,
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Where every voxel centre of a grid projects in one view: continuous detector ``(row, col)``
    (pixel units) and the depth ``w`` along the central ray (mm; 1 for parallel beam), each
    ``shape``. The same numbers as :meth:`ProjectionGeometry.project_points` of
    :func:`voxel_world_points`, computed as affine functions of the voxel index summed plane first
    (one full-size pass each instead of a matrix product over every voxel)."""
    matrix = geometry.projection_matrix(view).to(torch.float64) @ torch.as_tensor(affine, dtype=torch.float64)
    i, j, k = (torch.arange(n, dtype=dtype, device=device) for n in shape)

    def on_grid(c: torch.Tensor) -> torch.Tensor:
        c0, c1, c2, c3 = c.tolist()
        return ((c0 * i + c3)[:, None] + c1 * j)[:, :, None] + c2 * k

    row_w, col_w, depth = (on_grid(c) for c in matrix)
    return row_w / depth, col_w / depth, depth


def resampled_affine(affine: torch.Tensor, old_shape: Sequence[int], new_shape: Sequence[int]) -> torch.Tensor:
    """Affine of a grid with ``new_shape`` voxels covering the same field of view (same box)."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    factors = torch.tensor([o / n for o, n in zip(old_shape, new_shape)], dtype=torch.float64)
    new = affine.clone()
    new[:3, :3] = affine[:3, :3] * factors
    first_center = -0.5 + 0.5 * factors  # new voxel 0 centre, in old index units
    new[:3, 3] = affine[:3, :3] @ first_center + affine[:3, 3]
    return new


def grid_for_spacing(shape: Sequence[int], affine: torch.Tensor, spacing_mm: float) -> tuple[tuple[int, ...], torch.Tensor]:
    """The same field of view sampled at about ``spacing_mm`` (whole voxels, box kept exactly)."""
    spacing = torch.linalg.vector_norm(torch.as_tensor(affine, dtype=torch.float64)[:3, :3], dim=0)
    new_shape = _voxel_counts([n * float(s) for n, s in zip(shape, spacing)], spacing_mm)
    return new_shape, resampled_affine(affine, shape, new_shape)


def _voxel_counts(extents_mm: Sequence[float], spacing_mm: float) -> tuple[int, ...]:
    """Whole voxels of about ``spacing_mm`` across each extent: at least 2, with one warning when
    the spacing asks for fewer (it is coarser than the field of view)."""
    counts = [int(round(extent / spacing_mm)) for extent in extents_mm]
    if min(counts) < 2:
        box = " x ".join(f"{extent:.0f}" for extent in extents_mm)
        _LOGGER.warning(f"a spacing of {spacing_mm:g} mm is coarser than the {box} mm field of view; "
                        "axes with fewer than 2 voxels get 2.")  # fmt: skip
    return tuple(max(2, count) for count in counts)


def geometry_grid(geometry: ProjectionGeometry, spacing_mm: float | None = None) -> tuple[tuple[int, ...], torch.Tensor]:
    """An axis-aligned RAS grid centred on the isocenter covering the detector's field of view.

    The transaxial extent is the detector width at the isocenter, the axial extent its height;
    the default spacing is the detector pixel size at the isocenter.
    """
    if geometry.isocenter_mm is None:
        raise ValueError("the geometry needs a resolved isocenter to define a grid.")
    row_mm, col_mm = geometry.pixel_spacing_at_isocenter_mm
    width = geometry.detector_shape[1] * col_mm
    height = geometry.detector_shape[0] * row_mm
    spacing = spacing_mm or col_mm
    shape = _voxel_counts((width, width, height), spacing)
    affine = torch.eye(4, dtype=torch.float64)
    for axis, n in enumerate(shape):
        affine[axis, axis] = spacing
        affine[axis, 3] = geometry.isocenter_mm[axis] - (n - 1) / 2.0 * spacing
    return shape, affine


def check_source_outside(geometry: ProjectionGeometry, shape: Sequence[int], affine: torch.Tensor) -> None:
    """Refuse a cone-beam geometry whose source enters the volume's bounding box in some view.

    Args:
        geometry: the acquisition, isocenter resolved.
        shape: the volume's voxel counts.
        affine: voxel index -> world mm.

    Raises:
        GeometryError: naming the first view whose source lies inside the volume.
    """
    if geometry.beam != "cone":
        return
    angles = torch.tensor(geometry.angles_deg, dtype=torch.float64)
    tilts = None if geometry.tilt_deg is None else torch.tensor(geometry.tilt_deg, dtype=torch.float64)
    sources = geometry.frames(angles, tilts).source_mm
    affine = torch.as_tensor(affine, dtype=torch.float64)
    index = (sources - affine[:3, 3]) @ torch.linalg.inv(affine[:3, :3]).T  # world mm -> voxel index
    upper = torch.tensor([n - 1 for n in shape], dtype=torch.float64)
    inside = ((index >= -0.5) & (index <= upper + 0.5)).all(dim=1)
    if inside.any():
        view = int(inside.nonzero()[0])
        raise GeometryError(
            f"the X-ray source of view {view} ({geometry.angles_deg[view]:g} deg) lies inside the volume: "
            f"source_to_isocenter_mm {geometry.source_to_isocenter_mm:g} is shorter than the volume's extent "
            "from the isocenter."
        )


def check_volume_in_beam(geometry: ProjectionGeometry, shape: Sequence[int], affine: torch.Tensor) -> None:
    """Refuse a geometry none of whose rays can cross the volume's bounding box.

    In every view the box's eight corners are projected. A cone-beam view misses the box when all
    of them lie behind the source or beyond the detector (its rays run from one to the other), or
    when they lie between and their bounding rectangle misses the detector; a box that straddles
    the source plane counts as seen (its projection bounds nothing).

    Args:
        geometry: the acquisition, isocenter resolved.
        shape: the volume's voxel counts.
        affine: voxel index -> world mm.

    Raises:
        GeometryError: every view misses the volume (every line integral would be 0).
    """
    corners = _box_corners_affine(shape, affine)
    rows, cols = geometry.detector_shape
    for view in range(geometry.num_views):
        row, col, depth = grid_detector_coordinates(geometry, view, (2, 2, 2), corners)
        if geometry.beam == "cone":
            if bool((depth <= 0).all() or (depth >= geometry.source_to_detector_mm).all()):
                continue
            if bool((depth <= 0).any()):
                return
        if bool(row.max() >= -0.5 and row.min() <= rows - 0.5 and col.max() >= -0.5 and col.min() <= cols - 0.5):
            return
    raise GeometryError(
        "no ray of the geometry crosses the volume: it lies outside the beam in every view "
        "(check isocenter_mm, the distances and the detector)."
    )


def _box_corners_affine(shape: Sequence[int], affine: torch.Tensor) -> torch.Tensor:
    """The affine of a 2x2x2 grid whose voxel centres are the outer corners of a grid's voxel box."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    corners = affine.clone()
    corners[:3, :3] = affine[:3, :3] * torch.tensor([float(n) for n in shape], dtype=torch.float64)
    corners[:3, 3] = affine[:3, :3] @ torch.full((3,), -0.5, dtype=torch.float64) + affine[:3, 3]
    return corners


def resample_area(volume: torch.Tensor, new_shape: Sequence[int]) -> torch.Tensor:
    """Area-average (anti-aliased) resampling of ``(I, J, K)`` onto a grid of the same box."""
    return F.interpolate(volume[None, None].float(), size=tuple(new_shape), mode="area")[0, 0]


def resample_nearest(
    volume: torch.Tensor, source_affine: torch.Tensor, shape: Sequence[int], affine: torch.Tensor
) -> torch.Tensor:
    """Nearest-voxel resampling of ``volume`` (on ``source_affine``) onto another grid, by world position."""
    world = voxel_world_points(shape, affine)
    inverse = torch.linalg.inv(torch.as_tensor(source_affine, dtype=torch.float64))
    source_index = torch.round(world @ inverse[:3, :3].T + inverse[:3, 3]).long()
    upper = torch.tensor(volume.shape)
    inside = ((source_index >= 0) & (source_index < upper)).all(-1)
    source_index = torch.minimum(source_index.clamp(min=0), upper - 1)
    values = volume[source_index[:, 0], source_index[:, 1], source_index[:, 2]] * inside
    return values.view(*shape)
