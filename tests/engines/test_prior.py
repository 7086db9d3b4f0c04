"""Adversarial prior training: steps change both networks, checkpoints resume."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from gnerf_testing import TINY_GENERATOR, tiny_config

from monai_gnerf.data import PhantomPopulation, PhantomViewDataset
from monai_gnerf.engines import latest_checkpoint, prepare_training_views, prior_validation_set, train_prior
from monai_gnerf.engines.prior import CHECKPOINT_PREFIX
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.networks.generator import RadianceFieldGenerator


def test_adversarial_steps_change_both_networks_with_finite_losses(one_subject):
    geometry, dataset = one_subject
    torch.manual_seed(0)
    before = RadianceFieldGenerator(TINY_GENERATOR).state_dict()
    result = train_prior(dataset, geometry, tiny_config(3), progress=False)
    after = result.generator.state_dict()
    assert result.iterations == 3
    assert all(math.isfinite(v) for v in result.losses.values())
    assert {"loss_d", "loss_g", "r1"} <= set(result.losses)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_prior_checkpoint_resume_round_trip(one_subject, tmp_path):
    geometry, dataset = one_subject
    work = tmp_path / "work"
    first = train_prior(dataset, geometry, tiny_config(4, checkpoint_every=2, ema_decay=0.9), work_dir=work, progress=False)
    saved = latest_checkpoint(work, CHECKPOINT_PREFIX)
    assert saved is not None and saved.name.endswith("_4.pt")
    state = torch.load(saved, weights_only=True)
    assert {"generator", "discriminator", "ema", "optimizer_g", "optimizer_d", "subject_codes", "run"} <= set(state)
    assert state["run"]["iteration"] == 4  # the run state carries the engine's progress
    ema = {k: v for k, v in first.generator.state_dict().items()}  # Ignite's EMAHandler model is the result
    assert all(torch.equal(ema[k], state["ema"][k]) for k in ema)
    assert any(not torch.equal(state["ema"][k], state["generator"][k]) for k in ema)
    resumed = train_prior(dataset, geometry, tiny_config(6, checkpoint_every=2, ema_decay=0.9), work_dir=work,
                          progress=False)  # fmt: skip
    assert resumed.iterations == 6
    assert latest_checkpoint(work, CHECKPOINT_PREFIX).name.endswith("_6.pt")
    bigger = tiny_config(8, generator=dataclasses.replace(TINY_GENERATOR, hidden_features=48))
    with pytest.raises(GnerfInputError, match=r"holds a checkpoint of another run \(different generator\)"):
        train_prior(dataset, geometry, bigger, work_dir=work, progress=False)
    other_data = PhantomViewDataset(PhantomPopulation("chest", seed=1), geometry, [0])  # same config, other subject
    with pytest.raises(GnerfInputError, match=r"different inputs"):
        train_prior(other_data, geometry, tiny_config(8, checkpoint_every=2), work_dir=work, progress=False)


def test_the_3d_and_view_terms_fall_and_give_a_latent_distribution(one_subject):
    from gnerf_testing import TINY_GRID_GENERATOR

    geometry, dataset = one_subject
    config = dataclasses.replace(tiny_config(60), generator=TINY_GRID_GENERATOR, volume_weight=1.0, view_weight=1.0,
                                 pca_init=False)  # fmt: skip
    first = train_prior(dataset, geometry, dataclasses.replace(config, max_iterations=1), progress=False).losses
    result = train_prior(dataset, geometry, config, progress=False)
    last = result.losses
    assert last["loss_volume"] < 0.5 * first["loss_volume"], (first, last)
    assert last["loss_view"] < 0.5 * first["loss_view"], (first, last)
    dim = TINY_GRID_GENERATOR.shape_dim + TINY_GRID_GENERATOR.appearance_dim
    assert result.latent_mean.shape == (dim,) and result.latent_covariance.shape == (dim, dim)
    with pytest.raises(GnerfInputError, match="volume_weight and pca_init need"):
        train_prior(_ViewsOnly(dataset), geometry, config, progress=False)
    assert not dataclasses.replace(tiny_config(1), pca_init=True).starts_from_pca  # graf generators ignore it


class _ViewsOnly(torch.utils.data.Dataset):
    """A dataset of views without volumes (as MedNeRF folders are)."""

    def __init__(self, dataset) -> None:
        self.dataset, self.angles_deg, self.num_subjects = dataset, dataset.angles_deg, dataset.num_subjects

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


def test_validation_logs_psnr_and_ssim_of_learned_subject_views_at_the_training_iteration(one_subject, tmp_path):
    from gnerf_testing import TINY_GRID_GENERATOR, tensorboard_scalars

    geometry, dataset = one_subject
    config = dataclasses.replace(tiny_config(6), generator=TINY_GRID_GENERATOR, view_weight=1.0, volume_weight=1.0,
                                 pca_init=False, validate_every=3, validation_subjects=1)  # fmt: skip
    result = train_prior(dataset, geometry, config, tensorboard_dir=tmp_path / "tb", progress=False)
    assert set(result.validation) == {"val_psnr", "val_ssim"}
    # 6 steps from scratch against a chest that fills the detector: a poor but finite, in-range PSNR
    assert 5.0 < result.validation["val_psnr"] < 80.0 and 0.0 < result.validation["val_ssim"] <= 1.0
    logged = tensorboard_scalars(tmp_path / "tb")
    assert [step for step, _ in logged["val_psnr"]] == [3, 6]  # at the trainer's iterations, not the evaluator's epoch
    assert logged["val_psnr"][-1][1] == pytest.approx(result.validation["val_psnr"], rel=1e-5)
    views = prior_validation_set(dataset, 1)
    assert [views[i]["angle_deg"].item() for i in range(len(views))] == [0.0, 90.0]  # PA and a quarter turn


def test_no_validation_without_learned_codes(one_subject):
    geometry, dataset = one_subject
    result = train_prior(dataset, geometry, tiny_config(2, validate_every=1), progress=False)  # views only, no codes
    assert result.validation == {}


def test_a_pca_start_of_one_subject_is_refused_in_one_sentence(one_subject):
    from gnerf_testing import TINY_GRID_GENERATOR

    geometry, dataset = one_subject
    config = dataclasses.replace(tiny_config(2), generator=TINY_GRID_GENERATOR, volume_weight=1.0)
    with pytest.raises(GnerfInputError, match="pca_init needs at least 2 training subjects, the data has 1; .*'varied:<CT>'"):
        train_prior(dataset, geometry, config, progress=False)


def test_training_views_are_made_ahead_of_the_batches(one_subject):
    geometry, _ = one_subject
    dataset = PhantomViewDataset(PhantomPopulation("chest"), geometry, [0, 3])
    prepare_training_views(dataset)
    dataset.population = None  # nothing more can be made: every item must come from what was prepared
    assert all(dataset[i]["image"].abs().sum() > 0 for i in range(len(dataset)))
