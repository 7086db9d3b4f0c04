"""FID and KID on a pluggable feature extractor."""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.metrics import (
    RandomConvFeatures,
    TorchScriptFeatures,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
)


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
