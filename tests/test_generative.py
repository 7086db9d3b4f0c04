"""Generative prior: patch rays, losses, adversarial steps, checkpoints, single-view fitting, FID/KID."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from monai_gnerf import GnerfInputError
from monai_gnerf.datasets import PhantomViewDataset
from monai_gnerf.feature_metrics import (
    RandomConvFeatures,
    TorchScriptFeatures,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
)
from monai_gnerf.geometry import load_geometry
from monai_gnerf.losses import UncertaintyWeightedLoss, VGGFeatureLoss, vgg16_features
from monai_gnerf.metrics import psnr
from monai_gnerf.networks.discriminator import PatchDiscriminator
from monai_gnerf.networks.generator import GeneratorConfig, RadianceFieldGenerator
from monai_gnerf.patches import PatchRaySampler, sample_image_patches, view_rays
from monai_gnerf.population import PhantomPopulation
from monai_gnerf.prior import CHECKPOINT_PREFIX, PriorConfig, load_generator, render_views, save_generator, train_prior
from monai_gnerf.single_view import SingleViewConfig, fit_single_view
from monai_gnerf.training import latest_checkpoint

TINY_GENERATOR = GeneratorConfig(num_samples=16, hidden_features=32, hidden_layers=2)


def tiny_geometry(views: int = 36):
    return load_geometry("mednerf_chest").with_detector_shape(32, 32).with_uniform_angles(views).resolved((0, 0, 0))


def tiny_config(iterations: int, **kwargs) -> PriorConfig:
    options = dict(generator=TINY_GENERATOR, patch_size=16, batch_size=4, max_iterations=iterations, log_every=50,
                   sample_every=10_000, checkpoint_every=10_000, anneal_iterations=100, ema_decay=None,
                   lr_generator=2e-3, lr_discriminator=1e-3)  # fmt: skip
    options.update(kwargs)
    return PriorConfig(**options)


@pytest.fixture(scope="module")
def one_subject():
    geometry = tiny_geometry()
    return geometry, PhantomViewDataset(PhantomPopulation("chest"), geometry, [0])


@pytest.fixture(scope="module")
def trained_prior(one_subject):
    geometry, dataset = one_subject
    return train_prior(dataset, geometry, tiny_config(150), progress=False)


# ---------------------------------------------------------------- rays and patches
@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_patch_rays_at_scale_one_are_the_full_view_rays(beam):
    geometry = load_geometry("mednerf_chest" if beam == "cone" else "parallel_chest")
    geometry = geometry.with_detector_shape(24, 24).resolved((5.0, -3.0, 2.0))
    sampler = PatchRaySampler(geometry, patch_size=24)
    patches = sampler.grid(torch.ones(2), torch.zeros(2), torch.zeros(2))
    angles = torch.tensor([geometry.angles_deg[0], geometry.angles_deg[3]], dtype=torch.float64)
    origins, directions = view_rays(geometry, angles, patches.rows.double(), patches.cols.double())
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
    _, directions = view_rays(geometry, angle, rows, cols)
    directions[..., 0].sum().backward()
    assert angle.grad is not None and angle.grad.abs() > 0


# ---------------------------------------------------------------- networks and losses
def test_generator_renders_line_integrals_of_its_attenuation():
    generator = RadianceFieldGenerator(GeneratorConfig(num_samples=400, hidden_features=16, hidden_layers=2))
    z = generator.sample_latents(1, torch.Generator().manual_seed(0))
    origins = torch.tensor([[[0.0, -500.0, 0.0]]])
    directions = torch.tensor([[[0.0, 1.0, 0.0]]])
    rendered = generator(*z, origins, directions) * generator.config.value_scale
    t = torch.linspace(-200.0, 200.0, 4001)
    points = torch.stack([torch.zeros_like(t), t, torch.zeros_like(t)], -1)[None]
    with torch.no_grad():
        mu = generator.attenuation(points, *z)[0]
    reference = torch.trapezoid(mu, t)
    assert rendered.item() == pytest.approx(reference.item(), rel=2e-3)


def test_alpha_compositing_mode_is_bounded_by_the_appearance():
    generator = RadianceFieldGenerator(GeneratorConfig(render_mode="alpha", hidden_features=16, hidden_layers=2))
    z = generator.sample_latents(2, torch.Generator().manual_seed(1))
    o, d = view_rays(tiny_geometry(), torch.tensor([0.0, 90.0]), torch.rand(2, 50) * 31, torch.rand(2, 50) * 31)
    pixels = generator(*z, o, d)
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 2.0


def test_uncertainty_weighting_favours_the_less_noisy_task():
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    w_true = torch.tensor([1.0, -2.0, 0.5, 3.0])
    y_clean, y_noisy = x @ w_true + 0.05 * torch.randn(512), x @ w_true + 1.0 * torch.randn(512)
    weight = torch.zeros(4, requires_grad=True)
    combine = UncertaintyWeightedLoss(2)
    optimizer = torch.optim.Adam([weight, *combine.parameters()], lr=0.05)
    for _ in range(800):
        optimizer.zero_grad()
        pred = x @ weight
        loss = combine([(pred - y_clean).pow(2).mean(), (pred - y_noisy).pow(2).mean()])
        loss.backward()
        optimizer.step()
    w_clean, w_noisy = combine.weights().tolist()
    assert w_clean > 20 * w_noisy  # at the optimum s_i^2 = L_i: weights ~ 1/(2*0.0025) vs 1/(2*1)
    assert torch.allclose(weight, w_true, atol=0.05)  # the fit follows the clean task


def test_vgg_loss_needs_a_local_weights_file(tmp_path):
    with pytest.raises(GnerfInputError, match="VGG16 weights file not found"):
        VGGFeatureLoss(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(GnerfInputError, match="cannot read VGG16 weights"):
        VGGFeatureLoss(tmp_path / "bad.pth")
    features = vgg16_features(5)  # a whole torchvision-style trunk, saved as torchvision names it
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    loss = VGGFeatureLoss(tmp_path / "vgg16.pth", num_blocks=2)
    assert torch.equal(loss.features[0].weight, features[0].weight)
    a = torch.rand(2, 32, 32, requires_grad=True)
    value = loss(a, torch.rand(2, 32, 32))
    value.backward()
    assert value > 0 and a.grad.abs().sum() > 0
    assert loss(a, a).item() == 0.0


def test_discriminator_is_spectrally_normalized_and_multiscale():
    net = PatchDiscriminator(channels=(8, 16), num_scales=2)
    logits = net(torch.rand(3, 1, 16, 16), torch.tensor([1.0, 0.5, 0.25]))
    assert logits.shape == (3,)
    conv = net.branches[0].net[0]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- adversarial training
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
    train_prior(dataset, geometry, tiny_config(4, checkpoint_every=2), work_dir=work, progress=False)
    saved = latest_checkpoint(work, CHECKPOINT_PREFIX)
    assert saved is not None and saved.name.endswith("_4.pt")
    state = torch.load(saved, weights_only=True)
    assert {"generator", "discriminator", "ema", "optimizer_g", "optimizer_d", "trainer", "run"} <= set(state)
    resumed = train_prior(dataset, geometry, tiny_config(6, checkpoint_every=2), work_dir=work, progress=False)
    assert resumed.iterations == 6
    assert latest_checkpoint(work, CHECKPOINT_PREFIX).name.endswith("_6.pt")
    bigger = tiny_config(8, generator=GeneratorConfig(num_samples=16, hidden_features=48, hidden_layers=2))
    with pytest.raises(GnerfInputError, match="incompatible checkpoint"):
        train_prior(dataset, geometry, bigger, work_dir=work, progress=False)


def test_generator_file_round_trip_and_refusals(tmp_path):
    geometry = tiny_geometry()
    generator = RadianceFieldGenerator(TINY_GENERATOR)
    path = save_generator(tmp_path / "g.pt", generator, geometry, {"reference_max": 2.5})
    loaded, geo, extra = load_generator(path)
    assert geo == geometry and extra["reference_max"] == 2.5
    assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(GnerfInputError, match="checkpoint not found"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GnerfInputError, match="not a monai-gnerf generator"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(GnerfInputError, match="cannot load checkpoint"):
        load_generator(tmp_path / "corrupt.pt")


# ---------------------------------------------------------------- single view
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
            views = render_views(fit.generator, fit.z_shape, fit.z_appearance, trained_prior.geometry)
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
def _direct_kid(x: torch.Tensor, y: torch.Tensor) -> float:
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(7, 5, generator=gen, dtype=torch.float64),
        torch.randn(7, 5, generator=gen, dtype=torch.float64) + 0.3,
    )
    mean, error = kernel_inception_distance(x, y, num_subsets=1, subset_size=7)
    assert mean == pytest.approx(_direct_kid(x, y), rel=1e-10)
    assert error == 0.0
    mean_many, error_many = kernel_inception_distance(x, y, num_subsets=20, subset_size=5)
    assert error_many > 0 and abs(mean_many - mean) < 5 * error_many + 0.5


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(64, 32, 32, generator=gen) * 0.5
    features = extract_features(images, RandomConvFeatures(16))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    small = frechet_distance(features, extract_features(images + 0.05, RandomConvFeatures(16)))
    large = frechet_distance(features, extract_features(images + 0.3, RandomConvFeatures(16)))
    assert 0 < small < large
    kid_self, _ = kernel_inception_distance(features, features, num_subsets=10, subset_size=32)
    kid_shift, _ = kernel_inception_distance(features, extract_features(images + 0.3, RandomConvFeatures(16)), 10, 32)
    assert abs(kid_self) < kid_shift


def test_torchscript_extractor_loads_a_local_file_only(tmp_path):
    with pytest.raises(GnerfInputError, match="feature extractor file not found"):
        TorchScriptFeatures(tmp_path / "inception.pt")
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1)))
    net.save(str(tmp_path / "tiny.pt"))
    extractor = TorchScriptFeatures(tmp_path / "tiny.pt", input_size=24)
    assert extract_features(torch.rand(5, 32, 32), extractor).shape == (5, 4)


# ---------------------------------------------------------------- training data
def test_ct_view_dataset_renders_the_ct_drr():
    from monai_gnerf.data import example_ct_path
    from monai_gnerf.datasets import CTViewDataset
    from monai_gnerf.io import load_ct
    from monai_gnerf.physics import hu_to_attenuation
    from monai_gnerf.rendering import render_drr

    geometry = load_geometry("mednerf_chest").with_detector_shape(24, 24).with_uniform_angles(4)
    dataset = CTViewDataset(example_ct_path(), geometry)
    assert len(dataset) == 4
    item = dataset[2]
    ct = load_ct(example_ct_path())
    expected = render_drr(hu_to_attenuation(ct), geometry, views=[2])[0]
    assert torch.allclose(item["image"], expected, atol=1e-4) and item["angle_deg"] == 180.0


def test_mednerf_folder_dataset_and_data_dispatch(tmp_path):
    from PIL import Image

    from monai_gnerf.datasets import MedNeRFFolderDataset
    from monai_gnerf.workflows import prior_dataset

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
