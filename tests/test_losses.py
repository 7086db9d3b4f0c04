"""Losses: UMedNeRF uncertainty weighting, the VGG feature loss from a local file, total variation."""

from __future__ import annotations

import pytest
import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.losses import TotalVariationLoss, UncertaintyWeightedLoss, VGGFeatureLoss, vgg16_features


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
    with pytest.raises(GnerfInputError, match="cannot load VGG16 weights .*bad.pth: it is not a file written by torch.save"):
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


def _autograd_isotropic_tv(volume: torch.Tensor, smoothing: float) -> torch.Tensor:
    corner = volume[:-1, :-1, :-1]
    squared = sum((shifted - corner) ** 2 for shifted in (volume[1:, :-1, :-1], volume[:-1, 1:, :-1], volume[:-1, :-1, 1:]))
    return (squared + smoothing**2).sqrt().mean()


def test_total_variation_value_and_gradient_match_autograd():
    volume = torch.rand(9, 7, 5, dtype=torch.float64, requires_grad=True)
    expected = _autograd_isotropic_tv(volume / 0.02, 1e-3)
    (expected_grad,) = torch.autograd.grad(expected, volume)
    value = TotalVariationLoss(unit=0.02, smoothing=1e-3)(volume)
    (grad,) = torch.autograd.grad(value, volume, retain_graph=True)
    (again,) = torch.autograd.grad(value, volume)  # a retained graph gives the same gradient twice
    assert torch.equal(again, grad)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_total_variation_is_isotropic_on_a_diagonal_ramp():
    i, j, _ = torch.meshgrid(*(torch.arange(12.0, dtype=torch.float64),) * 3, indexing="ij")
    loss = TotalVariationLoss(smoothing=0.0)
    axial, diagonal = 0.3 * i, 0.3 * (i + j) / 2**0.5  # both slope 0.3 per voxel
    assert loss(axial).item() == pytest.approx(0.3, rel=1e-12)
    assert loss(diagonal).item() == pytest.approx(0.3, rel=1e-12)  # an L1 (anisotropic) TV gives 0.3 * sqrt(2)
    assert loss(torch.zeros(4, 4, 4)).item() == 0.0
