"""The generative radiance field, its file and the patch discriminator."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from gnerf_testing import TINY_GENERATOR, TINY_GRID_GENERATOR, tiny_geometry

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.networks import load_generator, save_generator
from monai_gnerf.networks.discriminator import PatchDiscriminator
from monai_gnerf.networks.generator import GeneratorConfig, RadianceFieldGenerator


ARCHITECTURES = {"graf": TINY_GENERATOR, "grid": TINY_GRID_GENERATOR}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_generator_renders_line_integrals_of_its_attenuation(architecture):
    config = dataclasses.replace(ARCHITECTURES[architecture], num_samples=400)
    generator = RadianceFieldGenerator(config)
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
    generator = RadianceFieldGenerator(dataclasses.replace(TINY_GENERATOR, render_mode="alpha"))
    z = generator.sample_latents(2, torch.Generator().manual_seed(1))
    o, d = tiny_geometry().rays_at(torch.tensor([0.0, 90.0]), torch.rand(2, 50) * 31, torch.rand(2, 50) * 31)
    pixels = generator(*z, o, d)
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 2.0


def test_discriminator_is_spectrally_normalized_and_multiscale():
    net = PatchDiscriminator(channels=(8, 16), num_scales=2)
    for _ in range(20):  # each training-mode pass is one power iteration; 1 pass left 2 % of draws > 5 % off
        logits = net(torch.rand(3, 1, 16, 16), torch.tensor([1.0, 0.5, 0.25]))
    assert logits.shape == (3,)
    conv = net.branches[0].net[0]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- adversarial training


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_generator_architectures_share_one_interface_and_file(tmp_path, architecture):
    geometry = tiny_geometry(4)
    generator = RadianceFieldGenerator(ARCHITECTURES[architecture]).eval()
    z = generator.sample_latents(1, torch.Generator().manual_seed(2))
    path = save_generator(tmp_path / "g.pt", generator, geometry, {"reference_max": 2.5})
    loaded, geo, extra = load_generator(path)
    assert geo == geometry and extra["reference_max"] == 2.5 and loaded.config == generator.config
    assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(), loaded.state_dict().values()))
    with torch.no_grad():
        views = loaded.render_views(*z, geometry)
        volume, affine = loaded.volume(*z, (8, 8, 8))
    assert views.shape == (4, 32, 32) and torch.equal(views, generator.render_views(*z, geometry))
    assert volume.shape == (8, 8, 8) and float(volume.min()) >= 0 and affine[0, 0] == 50.0
    rays = geometry.rays_at(torch.tensor([0.0]), *[g[None] for g in geometry.pixel_grid()])
    optimizer = torch.optim.SGD(generator.parameters(), lr=1e-3)
    for _ in range(2):  # the grid decoder's last layer starts at zero: the layers before it learn from step 2
        optimizer.zero_grad()
        (generator(*z, *rays) - 1.0).pow(2).mean().backward()  # brighter: no density is clamped away
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())  # every weight learns


def test_old_generator_files_load_as_graf_and_bad_grids_are_refused(tmp_path):
    geometry = tiny_geometry(2)
    path = save_generator(tmp_path / "g.pt", RadianceFieldGenerator(TINY_GENERATOR), geometry)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["architecture"]  # a file written before architectures existed
    torch.save(payload, path)
    assert load_generator(path)[0].config.architecture == "graf"
    with pytest.raises(GnerfInputError, match="grid_size must be a power of two"):
        GeneratorConfig(architecture="grid", grid_size=24)
    with pytest.raises(GnerfInputError, match="decoder_size must be a power of two"):
        GeneratorConfig(architecture="grid", decoder_size=12)


def test_the_decoder_output_is_upsampled_to_the_grid_and_capped_by_it():
    def convolutions(config):
        field = RadianceFieldGenerator(config).field
        return [m for m in field.decoder if isinstance(m, torch.nn.Conv3d)], field.grids(torch.zeros(2, config.shape_dim))

    layers, grids = convolutions(dataclasses.replace(TINY_GRID_GENERATOR, grid_size=16, decoder_size=8))
    assert len(layers) == 2 and grids.shape == (2, 1, 16, 16, 16)  # 4^3 -> 8^3 by one level, then upsampled
    layers, grids = convolutions(dataclasses.replace(TINY_GRID_GENERATOR, grid_size=8, decoder_size=32))
    assert len(layers) == 2 and grids.shape == (2, 1, 8, 8, 8)  # a decoder larger than the grid is capped


def test_generator_file_refusals(tmp_path):
    with pytest.raises(GnerfInputError, match="checkpoint not found"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GnerfInputError, match="not a monai-gnerf generator"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x04junk")  # a protocol-4 pickle: torch notes the protocol
    with warnings.catch_warnings(record=True) as noted, pytest.raises(GnerfInputError, match="cannot load checkpoint"):
        warnings.simplefilter("always")
        load_generator(tmp_path / "corrupt.pt")
    assert not noted  # the error is the only line: no warning before it


# ---------------------------------------------------------------- single view


@pytest.mark.parametrize("grid_size", [8, 16])  # 16: the decoder's 8^3 output is upsampled to the grid
def test_a_pca_initialized_grid_generator_is_the_pca_model(grid_size):
    from monai_gnerf.data import PhantomPopulation
    from monai_gnerf.data.phantoms import grid_affine
    from monai_gnerf.networks import PCAVolumeModel

    config = dataclasses.replace(TINY_GRID_GENERATOR, shape_dim=8, grid_size=grid_size, decoder_size=8)
    generator = RadianceFieldGenerator(config).eval()
    n, spacing = config.grid_size, 2.0 * config.extent_mm / config.grid_size
    population = PhantomPopulation("chest", seed=4)
    volumes = torch.stack([population.subject(i).voxelize((n,) * 3, (spacing,) * 3).as_tensor() for i in range(5)])
    pca = PCAVolumeModel.from_volumes(volumes / config.scale_per_mm, grid_affine((n,) * 3, (spacing,) * 3))
    stddevs = pca.variances.sqrt()
    generator.field.initialize_from_pca(pca.mean, pca.components, stddevs)
    code = torch.zeros(1, 8)
    code[0, : pca.num_components] = pca.encode(volumes[3] / config.scale_per_mm) / stddevs
    with torch.no_grad():
        volume, _ = generator.volume(code, torch.zeros(1, config.appearance_dim), (n,) * 3)
    assert torch.allclose(volume, volumes[3].clamp(min=0), atol=1e-4 * float(volumes.max()))
