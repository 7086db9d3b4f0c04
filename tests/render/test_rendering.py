from __future__ import annotations

import pytest
import torch
from gnerf_testing import GRID, VOXEL_MM
from monai.data import MetaTensor

from monai_gnerf.data.phantoms import grid_affine
from monai_gnerf.errors import VolumeError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.render import VolumeProjector, render_drr

# max |DRR - exact| over pixels whose ray crosses the phantom, relative to the view's largest
# line integral; the issue's acceptance bound
TOLERANCE = 0.005

CONE = ProjectionGeometry(
    beam="cone",
    angles_deg=(0.0, 37.0, 90.0, 211.0),
    detector_shape=(48, 48),
    pixel_spacing_mm=(7.0, 7.0),
    source_to_isocenter_mm=500.0,
    source_to_detector_mm=900.0,
    isocenter_mm=(0.0, 0.0, 0.0),
)
# Parallel rays of a z-axis orbit stay in one z plane, and at 0 and 90 degrees run along one
# voxel column: pixels sit on voxel centres there, so the piecewise-constant (Siddon) voxel model
# is sampled where it is defined rather than half a voxel off.
PARALLEL = ProjectionGeometry(
    beam="parallel",
    angles_deg=(0.0, 37.0, 90.0, 211.0),
    detector_shape=(64, 64),
    pixel_spacing_mm=(2 * VOXEL_MM, 2 * VOXEL_MM),
    detector_offset_mm=(VOXEL_MM / 2, VOXEL_MM / 2),
    isocenter_mm=(0.0, 0.0, 0.0),
)


def relative_errors(drr, exact):
    crossing = exact.abs() > 0
    scale = exact.flatten(1).abs().amax(1)[:, None, None]
    return ((drr - exact).abs() / scale)[crossing]


@pytest.mark.parametrize("geometry", [CONE, PARALLEL], ids=["cone", "parallel"])
@pytest.mark.parametrize("method, step_mm", [("joseph", None), ("trilinear", 0.2), ("siddon", None)])
def test_drr_matches_closed_form_line_integrals(smooth_phantom, smooth_volume, geometry, method, step_mm):
    origins, directions = geometry.rays(dtype=torch.float64)
    exact = smooth_phantom.line_integrals(origins, directions)
    assert exact.max() > 2.0  # a real head-sized attenuation, not a trivial case
    drr = render_drr(smooth_volume, geometry, method=method, step_mm=step_mm)
    assert relative_errors(drr, exact).max() < TOLERANCE


def test_uniform_ellipsoids_agree_on_average(smooth_phantom):
    """Classic uniform ellipsoids: silhouettes have infinite slope, so compare mean errors."""
    phantom = smooth_phantom.with_profile(0)
    volume = phantom.voxelize((GRID,) * 3, (VOXEL_MM,) * 3, dtype=torch.float64)
    origins, directions = CONE.rays(dtype=torch.float64)
    exact = phantom.line_integrals(origins, directions)
    drr = render_drr(volume, CONE)
    assert relative_errors(drr, exact).mean() < 0.01


def test_siddon_is_exact_for_a_uniform_voxel_box():
    """A uniform box: every ray's integral is mu times its chord through the box."""
    affine = grid_affine((5, 7, 6), (2.0, 3.0, 1.5))
    volume = torch.full((5, 7, 6), 0.02, dtype=torch.float64)
    g = ProjectionGeometry(
        beam="cone",
        angles_deg=(10.0, 100.0),
        detector_shape=(9, 9),
        pixel_spacing_mm=(2.5, 2.5),
        source_to_isocenter_mm=60.0,
        source_to_detector_mm=90.0,
        isocenter_mm=(0.3, -0.2, 0.1),
    )
    origins, directions = g.rays(dtype=torch.float64)
    half = torch.tensor([5.0, 10.5, 4.5], dtype=torch.float64)
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0, t1 = (-half - origins) / safe, (half - origins) / safe
    chord = (torch.maximum(t0, t1).amin(-1) - torch.minimum(t0, t1).amax(-1)).clamp(min=0)
    drr = render_drr(volume, g, affine=affine, method="siddon")
    assert chord.max() > 10.0
    assert torch.allclose(drr, 0.02 * chord, atol=1e-10)


@pytest.mark.parametrize("method", ["joseph", "trilinear", "siddon"])
def test_result_does_not_depend_on_voxel_storage_order(smooth_volume, method):
    """Flipping and permuting the array with a matching affine renders the same DRR."""
    small = smooth_volume[::4, ::4, ::4].clone()
    affine = grid_affine(small.shape, (4 * VOXEL_MM,) * 3)
    flipped = small.flip(0).permute(2, 0, 1).contiguous()
    index_map = torch.zeros(4, 4, dtype=torch.float64)  # new (a, b, c) = old (k, I-1-i, j)
    index_map[2, 0] = 1.0
    index_map[0, 1] = -1.0
    index_map[0, 3] = small.shape[0] - 1
    index_map[1, 2] = 1.0
    index_map[3, 3] = 1.0
    a = render_drr(small, CONE, affine=affine, method=method, step_mm=0.5)
    b = render_drr(flipped, CONE, affine=affine @ index_map, method=method, step_mm=0.5)
    assert torch.allclose(a, b, atol=1e-9 * a.abs().max().item() + 1e-9)


@pytest.mark.parametrize("method", ["joseph", "trilinear", "siddon"])
def test_chunking_and_checkpointing_do_not_change_values_or_gradients(smooth_volume, method):
    small = smooth_volume[::4, ::4, ::4].clone().as_subclass(torch.Tensor).requires_grad_(True)
    affine = grid_affine(small.shape, (4 * VOXEL_MM,) * 3)
    weights = torch.rand(CONE.num_views, *CONE.detector_shape, dtype=torch.float64)
    grads, values = [], []
    for chunk in (1 << 23, 2000):
        drr = render_drr(small, CONE, affine=affine, method=method, step_mm=1.0, max_samples_per_chunk=chunk)
        (grad,) = torch.autograd.grad((drr * weights).sum(), small)
        values.append(drr.detach())
        grads.append(grad)
    assert torch.allclose(values[0], values[1], atol=1e-10)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("method", ["joseph", "trilinear", "siddon"])
def test_gradient_is_the_adjoint_of_the_projector(method):
    """The projector is linear in the volume: <A x, y> == <x, A^T y> with A^T y from autograd."""
    gen = torch.Generator().manual_seed(0)
    affine = grid_affine((6, 7, 5), (3.0, 3.0, 3.0))
    x = torch.rand(6, 7, 5, dtype=torch.float64, generator=gen)
    probe = torch.rand(6, 7, 5, dtype=torch.float64, generator=gen).requires_grad_(True)
    g = ProjectionGeometry(
        beam="cone", angles_deg=(15.0, 75.0), detector_shape=(8, 8), pixel_spacing_mm=(4.0, 4.0),
        source_to_isocenter_mm=80.0, source_to_detector_mm=120.0, isocenter_mm=(0.5, 0.0, -0.5),
    )  # fmt: skip
    y = torch.rand(2, 8, 8, dtype=torch.float64, generator=gen)
    ax = render_drr(x, g, affine=affine, method=method, step_mm=0.7)
    (aty,) = torch.autograd.grad((render_drr(probe, g, affine=affine, method=method, step_mm=0.7) * y).sum(), probe)
    assert (ax * y).sum().item() == pytest.approx((x * aty).sum().item(), rel=1e-10)
    assert ax.max() > 0


def test_metatensor_carries_its_affine_and_channel_dim(smooth_volume):
    small = smooth_volume[::4, ::4, ::4]
    meta = MetaTensor(small[None].as_subclass(torch.Tensor).clone(), affine=grid_affine(small.shape, (4 * VOXEL_MM,) * 3))
    plain = render_drr(small.as_subclass(torch.Tensor), CONE, affine=meta.affine)
    assert torch.allclose(render_drr(meta, CONE), plain)


def test_projector_rejects_bad_volumes():
    affine = torch.eye(4)
    with pytest.raises(VolumeError, match="NaN"):
        VolumeProjector(torch.tensor(float("nan")).expand(4, 4, 4), affine)
    with pytest.raises(VolumeError, match="3D"):
        VolumeProjector(torch.zeros(4, 4), affine)
    with pytest.raises(VolumeError, match="affine"):
        VolumeProjector(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="render method"):
        VolumeProjector(torch.zeros(4, 4, 4), affine, method="magic")


def test_joseph_differentiates_with_respect_to_the_rays():
    """Rays that carry gradients (pose fits) get fresh sample grids; their gradient matches finite differences."""
    gen = torch.Generator().manual_seed(1)
    volume = torch.rand(9, 10, 8, dtype=torch.float64, generator=gen)
    projector = VolumeProjector(volume, grid_affine(volume.shape, (2.0, 2.0, 2.0)))
    origins = torch.tensor([[-20.0, 4.3, 3.7], [4.6, -20.0, 3.2]], dtype=torch.float64, requires_grad=True)
    directions = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05, 0.02], [0.03, 1.0, -0.04]], dtype=torch.float64), dim=1)
    (grad,) = torch.autograd.grad(projector.integrate(origins, directions).sum(), origins)
    shift = torch.zeros_like(origins)
    shift[:, 2] = 1e-6
    with torch.no_grad():
        numeric = (projector.integrate(origins + shift, directions) - projector.integrate(origins - shift, directions)) / 2e-6
    assert torch.allclose(grad[:, 2], numeric, rtol=1e-5, atol=1e-8) and numeric.abs().min() > 1e-3


def test_joseph_ray_order_does_not_change_the_drr():
    """Without gradients Joseph integrates rays in bit-reversed order; every ray still gets its own
    sum (compared with the gradient path, which keeps the detector order), over several chunks."""
    gen = torch.Generator().manual_seed(2)
    volume = torch.rand(12, 11, 10, generator=gen)
    geometry = ProjectionGeometry(
        beam="cone", source_to_isocenter_mm=60.0, source_to_detector_mm=100.0, detector_shape=(13, 17),
        pixel_spacing_mm=(2.5, 2.5), angles_deg=(0.0, 37.0, 90.0),
    )  # fmt: skip
    affine = grid_affine(volume.shape, (2.0, 2.0, 2.0))
    with torch.no_grad():
        scrambled = render_drr(volume, geometry, affine, max_samples_per_chunk=700)
    ordered = render_drr(volume.requires_grad_(), geometry, affine, max_samples_per_chunk=700).detach()
    assert scrambled.abs().min() > 0.5  # every ray crosses the volume
    assert torch.allclose(scrambled, ordered, rtol=1e-6, atol=1e-6)
