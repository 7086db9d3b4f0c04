from __future__ import annotations

from dataclasses import replace

import torch

from gnerf_testing import grid_fit_psnr, small_cone

from monai_gnerf.data import Ellipsoid, EllipsoidPhantom
from monai_gnerf.data.phantoms import grid_affine
from monai_gnerf.engines import FieldGrid, ReconstructionConfig, axial_margins, field_grid, rotation_grid_axis
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.physics import MU_WATER_PER_MM

SHAPE, SPACING = (20, 20, 16), (10.0, 10.0, 10.0)
AFFINE = grid_affine(SHAPE, SPACING)
CONE = small_cone(18, 48, 8.0)


def _limb(half_length_mm: float) -> EllipsoidPhantom:
    """A leg-like cylinder along z (soft tissue around a bone), ``half_length_mm`` long each way."""
    return EllipsoidPhantom((
        Ellipsoid((0.0, 0.0, 0.0), (60.0, 50.0, half_length_mm), 0.0, MU_WATER_PER_MM),
        Ellipsoid((10.0, 0.0, 0.0), (18.0, 18.0, half_length_mm), 0.0, MU_WATER_PER_MM),
    ))  # fmt: skip


def _projections(phantom: EllipsoidPhantom, geometry: ProjectionGeometry = CONE) -> torch.Tensor:
    return phantom.line_integrals(*geometry.rays(dtype=torch.float64)).float()


def test_the_field_grid_crops_and_averages_back_onto_the_output_grid():
    grid = FieldGrid(SHAPE, AFFINE, factor=2, axis=2, margin=(3, 1))
    assert grid.extended_shape == (20, 20, 20) and grid.shape == (40, 40, 40)
    # the field voxels of output voxel (0, 0, 0) average to its centre, in world mm
    first = grid.affine[:3, :3] @ torch.tensor([0.5, 0.5, 3 * 2 + 0.5], dtype=torch.float64) + grid.affine[:3, 3]
    assert torch.allclose(first, AFFINE[:3, 3])
    mask = (torch.rand(SHAPE) > 0.5).to(torch.uint8)
    on_field = grid.to_field(mask)
    assert on_field[:, :, :6].all() and on_field[:, :, -2:].all()  # the margins say nothing: inside
    assert torch.equal(grid.to_output(on_field.float()), mask.float())


def test_margins_reach_as_far_as_rays_crossing_the_end_faces_and_only_where_the_object_goes_on():
    parallel = ProjectionGeometry(
        beam="parallel", angles_deg=(0.0, 90.0), detector_shape=(48, 48), pixel_spacing_mm=(8.0, 8.0),
        isocenter_mm=(0.0, 0.0, 0.0),
    )  # fmt: skip
    assert axial_margins(parallel, SHAPE, AFFINE) == (0, 0)  # rays perpendicular to the axis never cross an end face
    # cone: a ray across the 200 mm cross-section at the detector's edge rises 200 * sqrt(2) * 192 / 800 mm
    reach = axial_margins(CONE, SHAPE, AFFINE)
    assert reach[0] == reach[1] and 4 <= reach[0] <= 7
    assert axial_margins(CONE, SHAPE, AFFINE, _projections(_limb(500.0))) == reach
    assert axial_margins(CONE, SHAPE, AFFINE, _projections(_limb(60.0))) == (0, 0)  # inside the box
    assert axial_margins(CONE, SHAPE, AFFINE, margin_mm=25.0) == (3, 3)
    about_y = replace(CONE, rotation_axis=(0.0, 1.0, 0.0), source_direction=(0.0, 0.0, -1.0))
    assert rotation_grid_axis(about_y, AFFINE) == 1 and rotation_grid_axis(CONE, AFFINE) == 2
    assert axial_margins(about_y, SHAPE, AFFINE)[0] < reach[0]  # a 200 x 160 mm cross-section: shorter chords
    assert field_grid(ReconstructionConfig(method="fdk"), CONE, SHAPE, AFFINE).margin == (0, 0)


def test_a_long_object_is_reconstructed_without_piling_up_in_the_end_slices():
    """The limb goes on 300 mm past both end faces; fitted in the box alone, what rays see beyond
    lands in the end slices."""
    limb = _limb(500.0)
    truth = limb.voxelize(SHAPE, SPACING, supersample=2).as_tensor()
    scores = grid_fit_psnr(_projections(limb), CONE, SHAPE, AFFINE, truth, "axial_margin_mm", (0.0, None))
    assert scores[None] > scores[0.0] + 10.0, scores  # measured: 20.0 and 37.0 dB
