"""Single-view fitting with a trained prior: it beats the untrained generator, pose is fitted."""

from __future__ import annotations

import dataclasses
import math
import re
import time

import pytest
import torch
from gnerf_testing import TINY_GENERATOR

from monai_gnerf.engines import SingleViewConfig, fit_single_view
from monai_gnerf.errors import GnerfInputError
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


# ---------------------------------------------------------------- the discrepancy principle


def _fit_with_residual(trained_prior, truth, residual_mse, **options):
    from monai_gnerf.engines import LatentPrior

    dim = trained_prior.generator.config.shape_dim + trained_prior.generator.config.appearance_dim
    prior = LatentPrior(torch.zeros(dim), torch.eye(dim), residual_mse)
    config = SingleViewConfig(**{"finetune_iterations": 12, **options})
    return fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=False, latent_prior=prior)


def _weights_equal(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_view_the_prior_explains_is_not_fine_tuned(one_subject, trained_prior):
    truth = one_subject[1].views(0)[0]
    start = _fit_with_residual(trained_prior, truth, None, finetune_iterations=0)  # the MAP code alone
    explained = _fit_with_residual(trained_prior, truth, residual_mse=start.input_mse * 1.01)
    assert explained.target_mse == pytest.approx(start.input_mse * 1.01) and explained.history == []
    assert _weights_equal(explained.generator, trained_prior.generator)  # no fine-tuning step taken
    assert torch.equal(explained.z_shape, start.z_shape) and explained.input_mse == pytest.approx(start.input_mse)


def test_fine_tuning_stops_at_the_discrepancy_target(one_subject, trained_prior):
    truth = one_subject[1].views(0)[0]
    start = _fit_with_residual(trained_prior, truth, None, finetune_iterations=0)
    every_step = _fit_with_residual(trained_prior, truth, None, finetune_iterations=40)
    assert len(every_step.history) == 40 and every_step.target_mse is None
    assert every_step.input_mse < 0.8 * start.input_mse  # fine-tuning fits the view closer
    halfway = 0.5 * (start.input_mse + every_step.input_mse)
    stopped = _fit_with_residual(trained_prior, truth, residual_mse=halfway, finetune_iterations=40)
    assert 1 <= len(stopped.history) < 40  # stopped early, at the first evaluation under the target
    assert stopped.input_mse <= halfway < start.input_mse
    ignoring = _fit_with_residual(trained_prior, truth, halfway, finetune_iterations=40, discrepancy=None)
    assert len(ignoring.history) == 40  # discrepancy=None runs every step


def test_a_latent_search_never_returns_a_worse_code_than_its_start(one_subject, trained_prior):
    truth = one_subject[1].views(0)[0]
    start = _fit_with_residual(trained_prior, truth, None, finetune_iterations=0)
    wild = _fit_with_residual(trained_prior, truth, None, finetune_iterations=0, latent_iterations=8, latent_lr=50.0)
    assert len(wild.history) == 8  # the search ran (and, with steps of 50 code units, diverged)
    assert torch.equal(wild.z_shape, start.z_shape) and wild.input_mse == pytest.approx(start.input_mse)


def test_map_residual_is_zero_on_the_generators_own_views_and_the_noise_on_noisy_ones():
    from monai_gnerf.engines import LatentPrior, map_residual_mse
    from gnerf_testing import TINY_GRID_GENERATOR, tiny_geometry

    config = dataclasses.replace(TINY_GRID_GENERATOR, shape_dim=4, appearance_dim=2)
    torch.manual_seed(0)
    generator = RadianceFieldGenerator(config).eval()
    geometry = tiny_geometry(1)
    prior = LatentPrior(torch.zeros(6), torch.eye(6))
    codes = 0.5 * torch.randn(3, 6)
    with torch.no_grad():
        views = torch.cat([generator.render_views(c[None, :4], c[None, 4:], geometry) for c in codes]) * config.value_scale
    fit = SingleViewConfig(latent_prior_weight=1e-9, coarse_factor=1)
    exact = map_residual_mse(generator, geometry, views, prior, fit)
    noise_std = 0.02  # display units
    noisy = views + noise_std * config.value_scale * torch.randn(views.shape, generator=torch.Generator().manual_seed(1))
    residual = map_residual_mse(generator, geometry, noisy, prior, fit)
    pixels, dim = views[0].numel(), 6
    assert exact < 1e-3 * noise_std**2
    assert residual == pytest.approx(noise_std**2 * (1 - dim / pixels), rel=0.1)  # the noise the code cannot fit


def test_many_restarts_stop_at_the_budget_and_keep_the_best_so_far(one_subject, trained_prior, caplog):
    """Each restart's own cost (its start, its renders) is not in the steps' shares: the restarts
    stop when the budget is spent, not after all of them."""
    truth = one_subject[1].views(0)[0]
    config = SingleViewConfig(restarts=10_000, latent_iterations=1, finetune_iterations=1, budget_s=2.0)
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        fit = fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=False)
    assert time.monotonic() - start < 4.0 and torch.isfinite(fit.z_shape).all()
    assert re.search(r"budget of 2 s was spent after \d+ of 10000 restarts", caplog.text)


def test_a_diverging_fit_is_one_error_naming_the_learning_rates(one_subject, trained_prior):
    truth = one_subject[1].views(0)[0]
    config = SingleViewConfig(restarts=1, latent_iterations=0, finetune_iterations=5, finetune_lr=1e30, discrepancy=None)
    with pytest.raises(GnerfInputError, match=r"diverged in its fine-tuning at step \d \(loss nan\): lower the learning rates"):
        fit_single_view(trained_prior.generator, trained_prior.geometry, truth, config, progress=False)
