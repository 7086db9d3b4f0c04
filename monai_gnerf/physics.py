"""X-ray physics: Hounsfield units, linear attenuation, Beer-Lambert and detector noise.

Units: attenuation coefficients ``mu`` are in 1/mm, CT numbers in HU, line integrals
``p = integral of mu ds`` are dimensionless (1/mm times mm), intensities are photon counts (or
any quantity proportional to them when ``i0`` is 1).

* HU <-> mu: ``mu = mu_water * (1 + HU / 1000)``, clipped at 0 (air is HU -1000).
* Beer-Lambert: ``I = I0 * exp(-p)`` and ``p = -ln(I / I0)``.
* Noise: Poisson photon counts with mean ``I`` plus Gaussian electronic noise (NAF, R2-Gaussian).
"""

from __future__ import annotations

from typing import Annotated

import torch

from monai_gnerf.config import Range

__all__ = [
    "MU_WATER_PER_MM",
    "PhotonsPerPixel",
    "WaterAttenuationPerMm",
    "hu_to_attenuation",
    "attenuation_to_hu",
    "line_integral_to_intensity",
    "intensity_to_line_integral",
    "add_detector_noise",
]

MU_WATER_PER_MM = 0.02
"""Linear attenuation of water (1/mm) at a typical diagnostic effective energy (~60-70 keV)."""

WaterAttenuationPerMm = Annotated[float, Range(ge=0.001, le=1.0)]
"""An attenuation of water in 1/mm: 0.001 to 1 spans photon energies from about 10 MeV down to 10 keV."""

PhotonsPerPixel = Annotated[float, Range(ge=100.0, le=1e9)]
"""Unattenuated photons per detector pixel of the noise model: at least 100 (fewer drown in the
10-photon electronic noise), at most 1e9 (effectively noise-free; far more overflows float32 counts)."""


def hu_to_attenuation(hu: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (1/mm) from CT numbers (HU); values below air are clipped to 0."""
    return torch.clamp(mu_water_per_mm * (1.0 + hu / 1000.0), min=0.0)


def attenuation_to_hu(mu_per_mm: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """CT numbers (HU) from linear attenuation (1/mm); the inverse of :func:`hu_to_attenuation`."""
    return 1000.0 * (mu_per_mm / mu_water_per_mm - 1.0)


def line_integral_to_intensity(line_integral: torch.Tensor, i0: float = 1.0) -> torch.Tensor:
    """Detected intensity ``I0 * exp(-p)`` from the line integral ``p`` (Beer-Lambert)."""
    return i0 * torch.exp(-line_integral)


def intensity_to_line_integral(intensity: torch.Tensor, i0: float = 1.0, min_fraction: float = 1e-8) -> torch.Tensor:
    """Line integral ``-ln(I / I0)``; intensities are floored at ``min_fraction * I0`` (photon starvation)."""
    return -torch.log(torch.clamp(intensity / i0, min=min_fraction))


def add_detector_noise(
    line_integral: torch.Tensor,
    i0_photons: float = 1.0e5,
    electronic_sigma_photons: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noisy line integrals: Poisson counts at ``i0_photons`` plus Gaussian electronic noise.

    Args:
        line_integral: noise-free line integrals (dimensionless).
        i0_photons: unattenuated photon count per pixel; lower means noisier (NAF uses 1e4-1e5).
        electronic_sigma_photons: standard deviation of the additive Gaussian noise, in photons.
        generator: optional random generator for reproducibility.

    Returns:
        Line integrals of the noisy intensities, same shape and dtype.
    """
    expected = line_integral_to_intensity(line_integral, i0_photons)
    counts = torch.poisson(expected, generator=generator)
    noise = torch.randn(expected.shape, generator=generator, dtype=expected.dtype, device=expected.device)
    noisy = counts + electronic_sigma_photons * noise
    return intensity_to_line_integral(torch.clamp(noisy, min=1.0), i0_photons)
