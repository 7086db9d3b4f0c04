"""Single-view fitting with a trained prior: it beats the untrained generator, pose is fitted."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from gnerf_testing import TINY_GENERATOR

from monai_gnerf.engines import SingleViewConfig, fit_single_view
from monai_gnerf.metrics import (
    psnr,
)
from monai_gnerf.networks.generator import RadianceFieldGenerator


def test_single_view_with_the_trained_prior_beats_the_untrained_generator(one_subject, trained_prior):
    geometry, dataset = one_subject
    truth = dataset.views(0)
    config = SingleViewConfig(restarts=2, latent_iterations=20, finetune_iterations=20)
    scores = {}
    for name, generator in (
        ("trained", trained_prior.generator),
        ("untrained", RadianceFieldGenerator(TINY_GENERATOR)),
    ):
        fit = fit_single_view(generator, trained_prior.geometry, truth[0], config, progress=False)
        with torch.no_grad():
            views = fit.generator.render_views(fit.z_shape, fit.z_appearance, trained_prior.geometry)
        scale = TINY_GENERATOR.value_scale
        scores[name] = psnr(views[1:], truth[1:] / scale, data_range=1.0)  # the 35 held-out views
    assert scores["trained"] > scores["untrained"] + 3.0, scores


def test_single_view_optimizes_the_pose(one_subject, trained_prior):
    geometry, dataset = one_subject
    truth = dataset.views(0)[0]
    config = SingleViewConfig(
        angle_deg=8.0, optimize_pose=True, restarts=1, latent_iterations=15, finetune_iterations=0
    )
    fit = fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=False)
    assert fit.angle_deg != 8.0 and math.isfinite(fit.angle_deg)


# ---------------------------------------------------------------- FID / KID


def test_latent_prior_penalty_is_the_mahalanobis_distance_and_draws_follow_it():
    from monai_gnerf.engines import LatentPrior

    covariance = torch.tensor([[4.0, 0.0], [0.0, 0.25]])
    prior = LatentPrior(torch.tensor([1.0, -1.0]), covariance)
    assert float(prior.penalty(torch.tensor([3.0, -1.0]))) == pytest.approx(0.5)  # (2/2)^2 / 2 dimensions
    assert float(prior.penalty(torch.tensor([1.0, -0.5]))) == pytest.approx(0.5)  # (0.5/0.5)^2 / 2
    rng = torch.Generator().manual_seed(0)
    draws = torch.stack([prior.sample(rng) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), prior.mean, atol=0.1)
    assert torch.allclose(torch.cov(draws.T), covariance, rtol=0.1, atol=0.06)  # 4 standard errors
    standard = LatentPrior.of_generator(RadianceFieldGenerator(TINY_GENERATOR), {})
    assert torch.equal(standard.mean, torch.zeros(48))


def test_single_view_budget_bounds_the_fit_time_and_its_bars_count_seconds(one_subject, trained_prior, capsys):
    import re

    geometry, dataset = one_subject
    truth = dataset.views(0)[0]
    config = SingleViewConfig(restarts=2, latent_iterations=10_000, finetune_iterations=10_000, budget_s=3.0)
    start = time.monotonic()
    fit = fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=True)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0 and 10 < len(fit.history) < 20_000
    err = capsys.readouterr().err
    totals = [int(t) for t in re.findall(r"fine-tuning \(s\):.*?\| \d+/(\d+) \[", err)]
    assert totals and all(t <= 3 for t in totals)  # a bar over the phase's seconds (its share of the 3 s budget)
    assert "/10000 [" not in err  # not a step bar that the deadline would leave unfinished


def test_uncertainty_ratio_learns_the_mix_with_a_fixed_total(one_subject, trained_prior):
    geometry, dataset = one_subject
    truth = dataset.views(0)[0]
    config = SingleViewConfig(weighting="uncertainty_ratio", restarts=1, latent_iterations=30, finetune_iterations=10)
    fit = fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=False)
    mse_share, structural_share = fit.task_weights
    assert mse_share + structural_share == pytest.approx(1.0)
    assert mse_share > 0.5  # the uncertainties learned that the pixel MSE is the smaller, surer term
    plain = fit_single_view(trained_prior.generator, trained_prior.geometry, truth,
                            dataclasses.replace(config, weighting="uncertainty"), progress=False)  # fmt: skip
    assert sum(plain.task_weights) > 1.5  # UMedNeRF's own weights grow as the losses fall
