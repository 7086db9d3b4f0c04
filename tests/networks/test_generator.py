"""The generative radiance field, its file and the patch discriminator."""

from __future__ import annotations

import pytest
import torch
from gnerf_testing import TINY_GENERATOR, tiny_geometry

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.networks import load_generator, save_generator
from monai_gnerf.networks.discriminator import PatchDiscriminator
from monai_gnerf.networks.generator import GeneratorConfig, RadianceFieldGenerator


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
    o, d = tiny_geometry().rays_at(torch.tensor([0.0, 90.0]), torch.rand(2, 50) * 31, torch.rand(2, 50) * 31)
    pixels = generator(*z, o, d)
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 2.0


def test_discriminator_is_spectrally_normalized_and_multiscale():
    net = PatchDiscriminator(channels=(8, 16), num_scales=2)
    logits = net(torch.rand(3, 1, 16, 16), torch.tensor([1.0, 0.5, 0.25]))
    assert logits.shape == (3,)
    conv = net.branches[0].net[0]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- adversarial training


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
