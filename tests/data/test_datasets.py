"""View datasets (CT, MedNeRF folders, phantom population) for prior training."""

from __future__ import annotations

import pytest
import torch
from gnerf_testing import tiny_geometry

from monai_gnerf.data import PhantomPopulation, PhantomViewDataset
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import load_geometry


def test_ct_view_dataset_renders_the_ct_drr():
    from monai_gnerf.data import CTViewDataset, example_ct_path
    from monai_gnerf.io import load_ct
    from monai_gnerf.physics import hu_to_attenuation
    from monai_gnerf.render import render_drr

    geometry = load_geometry("mednerf_chest").with_detector_shape(24, 24).with_uniform_angles(4)
    dataset = CTViewDataset(example_ct_path(), geometry)
    assert len(dataset) == 4
    item = dataset[2]
    ct = load_ct(example_ct_path())
    expected = render_drr(hu_to_attenuation(ct), geometry, views=[2])[0]
    assert torch.allclose(item["image"], expected, atol=1e-4) and item["angle_deg"] == 180.0


def test_mednerf_folder_dataset_and_data_dispatch(tmp_path):
    from PIL import Image

    from monai_gnerf.apps import prior_dataset
    from monai_gnerf.data import MedNeRFFolderDataset

    for subject in ("s1", "s2"):
        (tmp_path / subject).mkdir()
        for view in range(4):
            Image.fromarray(torch.full((8, 8), 51 * view, dtype=torch.uint8).numpy()).save(
                tmp_path / subject / f"{view:03d}.png"
            )
    dataset = prior_dataset(tmp_path, tiny_geometry())
    assert isinstance(dataset, MedNeRFFolderDataset) and len(dataset) == 8
    assert dataset.angles_deg == (0.0, 90.0, 180.0, 270.0)
    item = dataset[7]  # subject 2, view 3
    assert item["subject"] == 1 and torch.allclose(item["image"], torch.full((8, 8), 0.6 * dataset.full_scale))
    assert isinstance(prior_dataset("phantoms:knee", tiny_geometry(), subjects=3), PhantomViewDataset)
    with pytest.raises(GnerfInputError, match="training data not found"):
        prior_dataset(tmp_path / "nothing", tiny_geometry())
    with pytest.raises(GnerfInputError, match="unknown phantom population"):
        prior_dataset("phantoms:liver", tiny_geometry())


def test_population_is_deterministic_and_varied():
    population = PhantomPopulation("chest", seed=3)
    assert population.subject(5) == population.subject(5)
    assert population.subject(5) != population.subject(6)
    o, d = tiny_geometry(1).rays(dtype=torch.float64)
    a, b = (population.subject(i).line_integrals(o[0], d[0]) for i in (5, 6))
    assert (a - b).abs().max() > 0.05 and a.max() > 1.0  # realistic chest line integrals
