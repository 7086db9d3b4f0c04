from __future__ import annotations

import math

import pytest
import torch

from monai_gnerf.networks import (
    AttenuationField,
    DenseGridEncoding,
    FrequencyEncoding,
    GridAttenuationField,
    HashGridEncoding,
    MaskedField,
    voxel_centers,
)


def test_frequency_encoding_values_and_size():
    enc = FrequencyEncoding(num_frequencies=3)
    x = torch.tensor([[0.25, -0.5, 1.0]])
    out = enc(x)
    assert out.shape == (1, enc.output_size) == (1, 21)
    assert out[0, :3].tolist() == x[0].tolist()
    assert out[0, 3].item() == pytest.approx(math.sin(math.pi * 0.25))  # sin(2^0 pi x) for x[0]


def test_hash_grid_interpolates_a_linear_function_exactly():
    """Vertex features set to a linear function of position: trilinear interpolation is exact."""
    enc = HashGridEncoding(levels=2, features_per_level=1, log2_table_size=12, base_resolution=4, max_resolution=8)
    with torch.no_grad():
        for level in range(2):
            res = int(enc.resolutions[level])
            grid = torch.stack(torch.meshgrid(*[torch.arange(res + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
            index = enc._vertex_index(grid, level)
            assert len(set(index.tolist())) == grid.shape[0]  # dense indexing: no collisions
            enc.tables[level, index, 0] = (grid.float() / res) @ torch.tensor([1.0, 2.0, -3.0])
    points = torch.rand(50, 3) * 2 - 1
    unit = (points + 1) / 2
    expected = unit @ torch.tensor([1.0, 2.0, -3.0])
    out = enc(points)
    assert out.shape == (50, enc.output_size) == (50, 2)
    assert torch.allclose(out, expected[:, None].expand(-1, 2), atol=1e-5)


def test_hash_grid_hashes_fine_levels_into_the_table():
    enc = HashGridEncoding(levels=3, log2_table_size=10, base_resolution=4, max_resolution=64)
    vertices = torch.randint(0, 64, (1000, 3))
    index = enc._vertex_index(vertices, 2)
    assert int(index.min()) >= 0 and int(index.max()) < 1024


def test_dense_grid_encoding_samples_its_grids():
    enc = DenseGridEncoding(resolutions=(5, 9), features_per_level=2)
    with torch.no_grad():
        for g in enc.grids:
            n = g.shape[-1]
            z = torch.linspace(-1, 1, n)  # grid_sample x runs along the last axis
            g.copy_(z.view(1, 1, 1, 1, n).expand_as(g))
    points = torch.rand(20, 3) * 2 - 1
    out = enc(points)
    assert out.shape == (20, enc.output_size) == (20, 4)
    assert torch.allclose(out, points[:, 2:3].expand(-1, 4), atol=1e-5)


def test_grid_field_starts_at_its_initial_volume_and_agrees_with_point_sampling():
    initial = torch.rand(6, 7, 5) * 0.04
    field = GridAttenuationField((6, 7, 5), levels=2, initial_per_mm=initial)
    assert torch.allclose(field.voxels(), initial.clamp(min=2e-5), atol=2e-5)
    points = voxel_centers((6, 7, 5))
    assert torch.allclose(field(points), field.voxels().reshape(-1), atol=1e-6)


def test_grid_field_starts_finite_from_dense_metal_like_attenuation():
    initial = torch.tensor([0.0, 0.02, 0.2, 1.0, 50.0]).view(5, 1, 1).expand(5, 2, 2)  # up to 2500 x water
    field = GridAttenuationField((5, 2, 2), levels=1, initial_per_mm=initial)
    assert torch.isfinite(field.voxels()).all()
    assert torch.allclose(field.voxels()[1:], initial[1:], rtol=1e-5)


def test_masked_field_is_exactly_zero_outside_the_mask():
    mask = torch.zeros(8, 8, 8)
    mask[2:6, 3:7, 1:5] = 1
    field = MaskedField(AttenuationField(FrequencyEncoding(4)), mask)
    volume = field.voxels((8, 8, 8))
    assert (volume[mask == 0] == 0).all() and (volume[mask == 1] > 0).all()
    outside = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]])
    assert (field(outside) == 0).all()
    loss = field(voxel_centers((8, 8, 8))).sum()
    loss.backward()  # the mask sits inside the differentiable graph
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())
