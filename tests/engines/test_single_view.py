"""Single-view fitting with a trained prior: it beats the untrained generator, pose is fitted."""

from __future__ import annotations

import math

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
