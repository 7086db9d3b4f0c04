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
    assert scores["trained"] > scores["untrained"] + 2.0, scores  # a 300-step prior on a chest that fills the detector


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


def test_gauss_newton_start_is_the_map_code_of_a_linear_generator():
    from monai_gnerf.data import PhantomPopulation
    from monai_gnerf.data.phantoms import grid_affine
    from monai_gnerf.engines import LatentPrior
    from monai_gnerf.engines.single_view import _gauss_newton_start, _Renderer
    from monai_gnerf.networks import PCAVolumeModel
    from gnerf_testing import TINY_GRID_GENERATOR, tiny_geometry

    config = dataclasses.replace(TINY_GRID_GENERATOR, shape_dim=4, appearance_dim=2)
    generator = RadianceFieldGenerator(config).eval()
    n, spacing = config.grid_size, 2.0 * config.extent_mm / config.grid_size
    population = PhantomPopulation("chest", seed=4)
    volumes = torch.stack([population.subject(i).voxelize((n,) * 3, (spacing,) * 3).as_tensor() for i in range(5)])
    pca = PCAVolumeModel.from_volumes(volumes / config.scale_per_mm, grid_affine((n,) * 3, (spacing,) * 3))
    generator.field.initialize_from_pca(pca.mean, pca.components, pca.variances.sqrt())  # linear in the shape code
    geometry = tiny_geometry(4)
    code = torch.zeros(6)  # subject 3 (non-negative, so the clamp at zero stays inactive); appearance codes 0
    code[:4] = pca.encode(volumes[3] / config.scale_per_mm)[:4] / pca.variances[:4].sqrt()
    render = _Renderer(geometry, torch.zeros(geometry.detector_shape), 1, torch.device("cpu"))
    with torch.no_grad():
        render.target = render(generator, code, torch.tensor(0.0))
    prior = LatentPrior(torch.zeros(6), torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0, 1.0])))
    weight = 1e-3
    start = _gauss_newton_start(generator, render, prior, torch.tensor(0.0), weight, iterations=1)
    # the closed form: exact Jacobian (autograd) and the regularized normal equations
    view_of = lambda z: render(generator, z, torch.tensor(0.0)).flatten()  # noqa: E731
    jacobian = torch.autograd.functional.jacobian(view_of, prior.mean)
    pixels = render.target.numel()
    normal = jacobian.T.double() @ jacobian.double() / pixels + weight / 6 * prior.precision().double()
    view_at_mean = view_of(prior.mean).detach()
    expected = torch.linalg.solve(normal, jacobian.T.double() @ (render.target.flatten() - view_at_mean).double() / pixels)
    assert torch.allclose(start.double(), expected, atol=1e-4)
    assert not torch.allclose(start[:4], code[:4], atol=0.05)  # the prior pulls the code towards its mean
    weak = _gauss_newton_start(generator, render, prior, torch.tensor(0.0), 1e-9)
    assert torch.allclose(weak[:4], code[:4], atol=1e-2)  # with a negligible prior the view's own code
