"""monai-gnerf: generative and neural radiance fields for X-ray and CT, built on MONAI."""

from __future__ import annotations

from monai_gnerf.errors import GeometryError, GnerfInputError, VolumeError
from monai_gnerf.geometry import ProjectionGeometry, list_presets, load_geometry
from monai_gnerf.phantoms import Ellipsoid, EllipsoidPhantom, chest_phantom, shepp_logan_phantom
from monai_gnerf.physics import (
    MU_WATER_PER_MM,
    add_detector_noise,
    attenuation_to_hu,
    hu_to_attenuation,
    intensity_to_line_integral,
    line_integral_to_intensity,
)
from monai_gnerf.rendering import VolumeProjector, render_drr

__version__ = "0.1.0"

__all__ = [
    "GeometryError",
    "GnerfInputError",
    "VolumeError",
    "ProjectionGeometry",
    "list_presets",
    "load_geometry",
    "Ellipsoid",
    "EllipsoidPhantom",
    "chest_phantom",
    "shepp_logan_phantom",
    "MU_WATER_PER_MM",
    "add_detector_noise",
    "attenuation_to_hu",
    "hu_to_attenuation",
    "intensity_to_line_integral",
    "line_integral_to_intensity",
    "VolumeProjector",
    "render_drr",
]
