from __future__ import annotations

import math

import pytest
import torch

from monai_gnerf.physics import (
    MU_WATER_PER_MM,
    add_detector_noise,
    attenuation_to_hu,
    hu_to_attenuation,
    intensity_to_line_integral,
    line_integral_to_intensity,
)


def test_hu_to_attenuation_anchors_and_round_trip():
    hu = torch.tensor([-1000.0, 0.0, 1000.0, 2500.0])
    mu = hu_to_attenuation(hu)
    assert mu.tolist() == pytest.approx([0.0, MU_WATER_PER_MM, 2 * MU_WATER_PER_MM, 3.5 * MU_WATER_PER_MM])
    assert attenuation_to_hu(mu).tolist() == pytest.approx(hu.tolist())
    assert hu_to_attenuation(torch.tensor([-2048.0])).item() == 0.0  # below air clips to vacuum
    assert hu_to_attenuation(torch.tensor([0.0]), mu_water_per_mm=0.03).item() == pytest.approx(0.03)


def test_beer_lambert_round_trip_and_values():
    p = torch.tensor([0.0, 1.0, 3.5])
    intensity = line_integral_to_intensity(p, i0=1e4)
    assert intensity.tolist() == pytest.approx([1e4, 1e4 / math.e, 1e4 * math.exp(-3.5)])
    assert intensity_to_line_integral(intensity, i0=1e4).tolist() == pytest.approx(p.tolist(), abs=1e-6)
    assert intensity_to_line_integral(torch.tensor([0.0])).item() == pytest.approx(-math.log(1e-8))


def test_detector_noise_has_the_poisson_variance():
    p = torch.full((200_000,), 2.0, dtype=torch.float64)
    i0 = 1.0e4
    noisy = add_detector_noise(p, i0_photons=i0, electronic_sigma_photons=0.0, generator=torch.Generator().manual_seed(1))
    expected_counts = i0 * math.exp(-2.0)
    # delta method: var(-ln(N / I0)) = 1 / E[N] for Poisson N
    assert noisy.var().item() == pytest.approx(1.0 / expected_counts, rel=0.03)
    assert noisy.mean().item() == pytest.approx(2.0, abs=2e-3)
    louder = add_detector_noise(p, i0_photons=1e3, generator=torch.Generator().manual_seed(1))
    assert louder.var() > 5 * noisy.var()
