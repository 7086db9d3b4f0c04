"""Generative metrics from image features: FID and KID with a pluggable feature extractor.

* :func:`frechet_distance`: FID between two feature sets (MONAI's ``FIDMetric`` computation).
* :func:`kernel_inception_distance`: KID, the unbiased MMD^2 estimate with the cubic polynomial
  kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets, with its standard error.
* Extractors map grey images ``(N, H, W)`` in display units ``[0, 1]`` to features ``(N, D)``:
  :class:`TorchScriptFeatures` loads a TorchScript network from a local file (e.g. an
  Inception-v3 exported for FID); :class:`RandomConvFeatures` is a fixed, seeded random
  convolutional network for tests and for comparing runs of this project with each other. Its
  values are *not* comparable with published Inception FID/KID figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric
from torch import nn

from monai_gnerf.errors import GnerfInputError

__all__ = [
    "RandomConvFeatures",
    "TorchScriptFeatures",
    "extract_features",
    "frechet_distance",
    "kernel_inception_distance",
]


class RandomConvFeatures(nn.Module):
    """A fixed random CNN (seeded): grey images ``(N, H, W)`` -> features ``(N, features)``.

    Args:
        features: output feature size.
        seed: weight seed (the same seed gives the same extractor everywhere).
    """

    def __init__(self, features: int = 64, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        widths = (1, 16, 32, features)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=generator) / math.sqrt(conv.weight[0].numel())
                )
                conv.bias.zero_()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, None].float()
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return x.mean(dim=(2, 3))


class TorchScriptFeatures(nn.Module):
    """Features from a TorchScript network in a local file (e.g. Inception-v3 pool features).

    Images are repeated to 3 channels, resized to ``input_size`` and scaled to
    ``[0, input_range]`` before the network.

    Args:
        path: TorchScript file (``torch.jit.save``); nothing is downloaded.
        input_size: square input size of the network (299 for Inception-v3).
        input_range: the network's expected maximum input value (1 or 255).
    """

    def __init__(self, path: str | Path, input_size: int = 299, input_range: float = 1.0) -> None:
        super().__init__()
        if not Path(path).is_file():
            raise GnerfInputError(
                f"feature extractor file not found: {path}. FID/KID with Inception features need a local "
                "TorchScript Inception-v3 file (export one on a machine with internet access); without it, "
                "use RandomConvFeatures for relative comparisons."
            )
        try:
            self.net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise GnerfInputError(f"cannot load TorchScript feature extractor {path}: {err}") from None
        self.input_size, self.input_range = input_size, input_range

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, None].float().expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net(x * self.input_range).flatten(1)


@torch.no_grad()
def extract_features(images: torch.Tensor, extractor: nn.Module, batch_size: int = 64) -> torch.Tensor:
    """Features ``(N, D)`` (float64) of images ``(N, H, W)`` in display units, in batches."""
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    parts = [extractor(images[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` (FID)."""
    return float(FIDMetric()(features_a.double(), features_b.double()))


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 with the cubic polynomial kernel (diagonals of k(x,x), k(y,y) excluded)."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return term_xx + term_yy - 2.0 * k_xy.mean()


def kernel_inception_distance(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean unbiased MMD^2 over random subsets and its standard error.

    Args:
        features_a: ``(M, D)`` features.
        features_b: ``(N, D)`` features.
        num_subsets: random subsets drawn (without replacement within a subset).
        subset_size: subset size, clipped to the smaller set.
        seed: subset sampling seed.

    Returns:
        ``(mean, standard error of the mean)``; with one subset the error is 0.
    """
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size < 2:
        raise GnerfInputError("KID needs at least two samples in each set.")
    a, b = features_a.double(), features_b.double()
    rng = torch.Generator().manual_seed(seed)
    values = torch.stack(
        [
            _unbiased_mmd2(
                a[torch.randperm(a.shape[0], generator=rng)[:size]], b[torch.randperm(b.shape[0], generator=rng)[:size]]
            )
            for _ in range(num_subsets)
        ]
    )
    error = values.std(unbiased=True) / math.sqrt(num_subsets) if num_subsets > 1 else torch.zeros(())
    return float(values.mean()), float(error)
