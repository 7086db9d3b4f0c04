"""Networks: coordinate encodings and attenuation fields (plain ``nn.Module``s)."""

from __future__ import annotations

from monai_gnerf.networks.encodings import DenseGridEncoding, FrequencyEncoding, HashGridEncoding
from monai_gnerf.networks.fields import AttenuationField, GridAttenuationField, MaskedField, voxel_centers

__all__ = [
    "FrequencyEncoding",
    "HashGridEncoding",
    "DenseGridEncoding",
    "AttenuationField",
    "GridAttenuationField",
    "MaskedField",
    "voxel_centers",
]
