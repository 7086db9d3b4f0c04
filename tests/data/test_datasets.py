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
    from monai_gnerf.geometry import volume_center_mm
    from monai_gnerf.render import render_drr, sample_volume_at
    from monai_gnerf.transforms import ct_view_preprocessing

    geometry = load_geometry("mednerf_chest").with_detector_shape(24, 24).with_uniform_angles(4)
    dataset = CTViewDataset(example_ct_path(), geometry, ct_view_preprocessing(geometry))  # LoadCTd, HU->mu, DRRs
    assert len(dataset) == 4
    item = dataset[2]
    ct = load_ct(example_ct_path())
    mu = hu_to_attenuation(ct)
    expected = render_drr(mu, geometry, views=[2])[0]
    assert torch.allclose(item["image"], expected, atol=1e-4) and item["angle_deg"] == 180.0
    points = torch.tensor([[0.0, 0.0, 0.0], [30.0, -20.0, 10.0]])  # relative to the isocenter, the CT's centre
    truth = sample_volume_at(mu.as_tensor(), ct.affine, points + volume_center_mm(ct.affine, ct.shape).float())
    assert torch.allclose(dataset.attenuation_at(0, points), truth, atol=1e-6) and truth.max() > 0.01


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


def test_chest_population_has_ribs_vertebrae_and_a_table():
    subject = PhantomPopulation("chest", seed=1).subject(0)
    assert len(subject.ellipsoids) > 120  # ribs are chains of short segments
    # along the spine's axis (posterior midline) the density alternates: vertebral bodies and discs
    spine = [e for e in subject.ellipsoids if e.center_mm[0] == 0.0 and e.semi_axes_mm[2] < 20.0 and e.value > 0.01]
    y = spine[0].center_mm[1]
    z = torch.linspace(-150.0, 150.0, 601, dtype=torch.float64)
    line = subject.density(torch.stack([torch.zeros_like(z), torch.full_like(z, y), z], -1))
    level = 0.6 * float(line.max())
    rises = ((line[1:] > level) & (line[:-1] <= level)).sum()
    assert rises >= 8
    table = max(subject.ellipsoids, key=lambda e: e.semi_axes_mm[0])
    assert table.semi_axes_mm[0] > 150.0 and table.center_mm[1] < -60.0  # wide, behind the back


def test_ct_population_varies_the_ct_deterministically_and_knows_its_volumes():
    from monai_gnerf.apps import prior_dataset
    from monai_gnerf.data import CTPopulation

    population = CTPopulation(("example",), seed=2, grid_size=32)
    a, b = population.subject(0), population.subject(1)
    assert torch.equal(a.attenuation, population.subject(0).attenuation)
    difference = (a.attenuation - b.attenuation).abs().mean() / a.attenuation.mean()
    assert 0.02 < float(difference) < 0.6  # the same anatomy, varied
    centre = torch.zeros(1, 3, dtype=torch.float64)
    assert 0.005 < float(a.density(centre)) < 0.04  # soft tissue or lung-blended tissue in 1/mm at the isocenter
    dataset = prior_dataset("varied:example", tiny_geometry(4), subjects=2)
    smaller = prior_dataset("varied:example", tiny_geometry(4), subjects=1, extent_mm=150.0).subject(0)
    assert smaller.affine[0, 0] * smaller.attenuation.shape[0] == pytest.approx(300.0)  # the generator's cube
    view = dataset[1]["image"]  # subject 0, view 1
    o, d = dataset.geometry.rays([1], dtype=torch.float64)
    assert torch.allclose(view, dataset.subject(0).line_integrals(o[0], d[0]).float(), atol=1e-4)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 500.0]])
    values = dataset.attenuation_at(1, points)
    expected = float(dataset.subject(1).density(points[:1].double()))
    assert float(values[1]) == 0.0 and float(values[0]) == pytest.approx(expected, rel=1e-5)


def test_phantom_views_and_volumes_agree_for_the_3d_term():
    geometry = tiny_geometry(2)
    dataset = PhantomViewDataset(PhantomPopulation("knee", seed=1), geometry, [4, 9])
    item = dataset[3]
    assert int(item["index"]) == 1 and int(item["subject"]) == 9
    points = torch.tensor([[0.0, 0.0, 150.0], [0.0, 0.0, 400.0]])
    values = dataset.attenuation_at(1, points)
    expected = float(PhantomPopulation("knee", seed=1).subject(9).density(points[:1].double()))
    assert float(values[0]) == pytest.approx(expected) and expected > 0.005 and float(values[1]) == 0.0  # thigh; outside
