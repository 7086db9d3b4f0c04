"""GRAF patch sampling: patch rays are the geometry's rays, scales anneal, real patches sample the view."""

from __future__ import annotations

import pytest
import torch
from gnerf_testing import tiny_geometry

from monai_gnerf.geometry import load_geometry
from monai_gnerf.render import PatchRaySampler, sample_image_patches


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_patch_rays_at_scale_one_are_the_full_view_rays(beam):
    geometry = load_geometry("mednerf_chest" if beam == "cone" else "parallel_chest")
    geometry = geometry.with_detector_shape(24, 24).resolved((5.0, -3.0, 2.0))
    sampler = PatchRaySampler(geometry, patch_size=24)
    patches = sampler.grid(torch.ones(2), torch.zeros(2), torch.zeros(2))
    angles = torch.tensor([geometry.angles_deg[0], geometry.angles_deg[3]], dtype=torch.float64)
    origins, directions = geometry.rays_at(angles, patches.rows.double(), patches.cols.double())
    ref_o, ref_d = geometry.rays([0, 3], dtype=torch.float64)
    assert torch.allclose(directions, ref_d.reshape(2, -1, 3), atol=1e-9)
    if beam == "cone":
        assert torch.allclose(origins, ref_o.reshape(2, -1, 3), atol=1e-6)
    else:  # parallel rays may start anywhere on their line
        offset = origins - ref_o.reshape(2, -1, 3)
        assert torch.linalg.cross(offset, directions).abs().max() < 1e-6


def test_patch_scale_anneals_and_real_patches_sample_the_view():
    geometry = tiny_geometry()
    sampler = PatchRaySampler(geometry, patch_size=16, min_scale=0.25, anneal_iterations=100)
    assert sampler.scale_range(0) == (1.0, 1.0)
    assert sampler.scale_range(100)[0] == pytest.approx(0.25)
    patches = sampler.sample(64, 100, torch.Generator().manual_seed(0))
    assert patches.scale.min() >= 0.25 and patches.scale.max() <= 1.0
    assert patches.rows.min() >= -0.5 and patches.rows.max() <= 31.5
    # a linear ramp image is sampled exactly at the continuous positions
    ramp = torch.arange(32.0)[None, :].expand(32, 32)[None].expand(64, -1, -1)
    values = sample_image_patches(ramp, patches)
    inside = (patches.cols >= 0) & (patches.cols <= 31)
    assert torch.allclose(values[inside], patches.cols[inside], atol=1e-4)


def test_view_rays_are_differentiable_in_the_angle():
    geometry = tiny_geometry()
    angle = torch.tensor([10.0], requires_grad=True)
    rows, cols = torch.full((1, 1), 15.5), torch.full((1, 1), 3.0)
    _, directions = geometry.rays_at(angle, rows, cols)
    directions[..., 0].sum().backward()
    assert angle.grad is not None and angle.grad.abs() > 0


# ---------------------------------------------------------------- networks and losses
