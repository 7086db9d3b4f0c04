"""MONAI intensity transforms: CT numbers (HU) to linear attenuation (array and dictionary forms)."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_gnerf.physics import MU_WATER_PER_MM, hu_to_attenuation

__all__ = ["HUToAttenuation", "HUToAttenuationd"]


class HUToAttenuation(Transform):
    """Convert CT numbers (HU) to linear attenuation (1/mm), keeping metadata.

    Args:
        mu_water_per_mm: attenuation of water at the effective energy, 1/mm.
    """

    def __init__(self, mu_water_per_mm: float = MU_WATER_PER_MM) -> None:
        self.mu_water_per_mm = mu_water_per_mm

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return hu_to_attenuation(img, self.mu_water_per_mm)


class HUToAttenuationd(MapTransform):
    """Dictionary wrapper of :class:`HUToAttenuation`."""

    def __init__(
        self, keys: KeysCollection, mu_water_per_mm: float = MU_WATER_PER_MM, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = HUToAttenuation(mu_water_per_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
