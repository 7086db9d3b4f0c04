from __future__ import annotations

import math

import pytest
import torch

from monai_gnerf.data import Ellipsoid, EllipsoidPhantom, chest_phantom, shepp_logan_phantom


def random_rays(n, generator):
    origins = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 20.0 - torch.tensor([0.0, 300.0, 0.0])
    target = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 30.0
    d = target - origins
    return origins, d / d.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("profile", [0, 1, 2])
@pytest.mark.parametrize("factory", [shepp_logan_phantom, chest_phantom])
def test_closed_form_matches_numerical_quadrature(factory, profile):
    phantom = factory(profile=profile)
    origins, directions = random_rays(64, torch.Generator().manual_seed(profile))
    exact = phantom.line_integrals(origins, directions)
    step = 0.01
    t = torch.arange(0.0, 600.0, step, dtype=torch.float64) + step / 2
    numeric = torch.stack(
        [phantom.density(o + t[:, None] * d).sum() * step for o, d in zip(origins, directions)]
    )
    assert exact.abs().max() > 1.0
    assert torch.allclose(exact, numeric, atol=2e-3 * exact.abs().max().item())


def test_sphere_chord_is_exact():
    sphere = EllipsoidPhantom((Ellipsoid((5.0, 0.0, 0.0), (10.0, 10.0, 10.0), 30.0, 0.02),))
    origins = torch.tensor([[5.0, -100.0, 0.0], [5.0, -100.0, 6.0], [5.0, -100.0, 10.5]], dtype=torch.float64)
    directions = torch.tensor([[0.0, 1.0, 0.0]] * 3, dtype=torch.float64)
    expected = [0.02 * 20.0, 0.02 * 2 * 8.0, 0.0]
    assert sphere.line_integrals(origins, directions).tolist() == pytest.approx(expected, abs=1e-12)


def test_rays_and_points_near_a_long_axis_tip_are_not_culled():
    # each ellipsoid is evaluated only near its bounding sphere: a ray 1 mm from the tip of a long,
    # rotated ellipsoid (1 m from its source) and a point just inside the tip must still count
    ellipsoid = Ellipsoid((3.0, -2.0, 1.0), (30.0, 5.0, 5.0), 40.0, 0.02)
    phantom = EllipsoidPhantom((ellipsoid,))
    axis = torch.tensor([math.cos(math.radians(40.0)), math.sin(math.radians(40.0)), 0.0], dtype=torch.float64)
    near_tip = torch.tensor(ellipsoid.center_mm, dtype=torch.float64) + 29.0 * axis
    origins = (near_tip - torch.tensor([0.0, 0.0, 1000.0], dtype=torch.float64))[None]
    chord = 2.0 * 5.0 * math.sqrt(1.0 - (29.0 / 30.0) ** 2)
    assert phantom.line_integrals(origins, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)).item() == (
        pytest.approx(0.02 * chord, rel=1e-9)
    )
    assert phantom.density(near_tip[None]).item() == pytest.approx(0.02)


def test_chest_phantom_has_radiological_anatomy():
    chest = chest_phantom()
    pts = torch.tensor([[0.0, 0.0, -150.0], [67.0, 3.0, 22.0], [0.0, -75.0, 0.0]], dtype=torch.float64)
    soft, lung, spine = chest.density(pts).tolist()
    assert lung < 0.3 * soft < spine  # lung ~ -800 HU, spine denser than soft tissue


def test_voxelize_places_the_phantom_at_the_world_origin():
    blob = EllipsoidPhantom((Ellipsoid((0.0, 0.0, 0.0), (6.0, 6.0, 6.0), 0.0, 0.05),))
    vol = blob.voxelize((9, 9, 9), (2.0, 2.0, 2.0), supersample=2)
    assert vol.affine[:3, 3].tolist() == [-8.0, -8.0, -8.0]
    assert vol[4, 4, 4] == pytest.approx(0.05)
    assert vol[0, 0, 0] == 0.0
    assert 0 < vol[4, 4, 7] < 0.05  # partial volume at the sphere's edge (centre at 6 mm)
