"""Helpers shared by the jobs: the device check and the output units of volumes."""

from __future__ import annotations

from typing import Literal

import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.physics import attenuation_to_hu

__all__ = ["Units", "check_device", "to_units"]

Units = Literal["hu", "mu"]
"""Output units of a volume: ``"hu"`` (CT numbers) or ``"mu"`` (attenuation in 1/mm)."""


def check_device(name: str | torch.device) -> torch.device:
    """The torch device called ``name``, or a :class:`GnerfInputError` if it is unknown or absent."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise GnerfInputError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GnerfInputError(f"device {name!r} was requested but no CUDA GPU is available; use cpu.")
    return device


def to_units(volume_mu: torch.Tensor, units: Units, mu_water_per_mm: float) -> torch.Tensor:
    """An attenuation volume (1/mm) in the requested output units."""
    if units == "hu":
        return attenuation_to_hu(volume_mu, mu_water_per_mm)
    if units == "mu":
        return volume_mu
    raise GnerfInputError(f"units must be 'hu' or 'mu', got {units!r}.")
