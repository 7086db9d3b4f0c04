from __future__ import annotations

import json
import math

import pytest
import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import resampled_affine
from monai_gnerf.io import save_volume
from monai_gnerf.metrics import evaluate_test_set, gmsd, normalize_to_reference, psnr, ssim


def test_psnr_uses_the_explicit_data_range():
    target = torch.zeros(10, 10)
    prediction = torch.full((10, 10), 0.1)
    assert psnr(prediction, target, data_range=1.0) == pytest.approx(20.0)
    assert psnr(prediction, target, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2))
    assert psnr(target, target, 1.0) == math.inf


def test_ssim_and_gmsd_are_perfect_for_identical_images_and_degrade_with_noise():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(64, 64, generator=gen).cumsum(0) / 64
    noisy = image + 0.05 * torch.randn(64, 64, generator=gen)
    assert ssim(image, image, 1.0) == pytest.approx(1.0)
    assert gmsd(image, image, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert ssim(noisy, image, 1.0) < 0.9
    assert gmsd(noisy, image, 1.0) > 0.01
    volume = torch.rand(20, 20, 20, generator=gen)
    assert ssim(volume, volume, 1.0) == pytest.approx(1.0)
    assert ssim(volume + 0.2 * torch.randn(20, 20, 20, generator=gen), volume, 1.0) < 0.9
    a, b, c1 = 0.3, 0.5, 0.01**2  # constant volumes: only the luminance term remains
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(torch.full((12, 12, 12), a), torch.full((12, 12, 12), b), 1.0) == pytest.approx(expected)


def test_normalize_to_reference_uses_the_reference_range():
    reference = torch.tensor([0.0, 0.02, 0.04])
    estimate, truth = normalize_to_reference(torch.tensor([-0.01, 0.02, 0.05]), reference)
    assert truth.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert estimate.tolist() == pytest.approx([0.0, 0.5, 1.0])  # clipped to [0, 1]


def test_evaluation_clips_the_reference_at_air_before_averaging_it_onto_a_coarser_grid(tmp_path):
    reference = torch.full((8, 8, 8), 1000.0)
    reference[0:4:2] = -2048.0  # CT padding beside tissue at 0 HU: pairs of slices the 2:1 average mixes
    reference[1:4:2] = 0.0
    affine = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    save_volume(tmp_path / "reference.nii.gz", reference, affine)
    coarse = torch.full((4, 4, 4), 1000.0)
    coarse[:2] = -500.0  # the average of air (-1000 HU, where attenuation clips) and 0 HU
    save_volume(tmp_path / "prediction.nii.gz", coarse, resampled_affine(affine, (8, 8, 8), (4, 4, 4)))
    summary = evaluate_test_set(tmp_path / "scores", tmp_path / "prediction.nii.gz", tmp_path / "reference.nii.gz")
    # exact: averaging before clipping would give -1000 HU there (15.05 dB)
    assert math.isinf(summary["volumes"]["mean"]["psnr_db"])
    text = (tmp_path / "scores" / "metrics.json").read_text()  # strict JSON: an infinite PSNR is null
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    assert written["volumes"]["mean"]["psnr_db"] is None


def test_evaluation_that_fails_on_a_later_case_leaves_no_metric_file(tmp_path):
    volume = torch.linspace(-1000.0, 1000.0, 8**3).view(8, 8, 8)
    save_volume(tmp_path / "reference.nii.gz", volume, torch.eye(4, dtype=torch.float64))
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "projections.nii.gz").write_bytes(b"not a projection stack")
    with pytest.raises(GnerfInputError, match="geometry|projection"):  # the 3D case scores; the 2D one cannot load
        evaluate_test_set(tmp_path / "scores", tmp_path / "reference.nii.gz", tmp_path / "reference.nii.gz",
                          tmp_path / "views", tmp_path / "views")  # fmt: skip
    assert not (tmp_path / "scores").exists()
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]
