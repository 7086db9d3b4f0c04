"""The linear (PCA) baseline: exact recovery of population members from one view, MAP shrinkage."""

from __future__ import annotations

import pytest
import torch

from monai_gnerf.data import PhantomPopulation
from monai_gnerf.data.phantoms import grid_affine
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import load_geometry
from monai_gnerf.networks import PCAVolumeModel
from monai_gnerf.render import render_drr

SHAPE, SPACING_MM = (24, 24, 24), (16.0, 16.0, 16.0)


@pytest.fixture(scope="module")
def population_volumes():
    population = PhantomPopulation("chest", seed=3)
    return torch.stack([population.subject(i).voxelize(SHAPE, SPACING_MM).as_tensor() for i in range(6)])


def test_components_are_orthonormal_and_reproduce_members(population_volumes):
    affine = grid_affine(SHAPE, SPACING_MM)
    model = PCAVolumeModel.from_volumes(population_volumes, affine)
    assert model.num_components == 5  # N - 1 directions of a centred population of 6
    basis = model.components.double().flatten(1)  # the stored float32 directions, summed in float64
    gram = basis @ basis.T
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=1e-5)
    member = population_volumes[2]
    assert torch.allclose(model.decode(model.encode(member)), member, atol=1e-6)
    assert torch.equal(model.decode(torch.zeros(5)).affine, affine)


def test_one_view_recovers_a_member_exactly_and_shrinks_under_noise(population_volumes):
    affine = grid_affine(SHAPE, SPACING_MM)
    model = PCAVolumeModel.from_volumes(population_volumes, affine)
    geometry = load_geometry("mednerf_chest").with_detector_shape(32, 32).with_uniform_angles(4).resolved((0, 0, 0))
    member = population_volumes[4]
    view = render_drr(member, geometry, affine, views=[0])
    fitted, coefficients = model.fit_views(geometry, view, noise_variance=1e-10)
    assert torch.allclose(coefficients, model.encode(member), rtol=1e-3, atol=1e-4)
    assert float((fitted - member).abs().max()) < 1e-4 * float(member.abs().max()) + 1e-6
    _, shrunk = model.fit_views(geometry, view, noise_variance=1e3)  # the prior dominates: towards the mean
    assert float(shrunk.norm()) < 0.5 * float(coefficients.norm())
    with pytest.raises(GnerfInputError, match="do not match"):
        model.fit_views(geometry, view[0])
