"""Acquisition geometry as data: projection geometries, their rays, grids and the presets.

:class:`ProjectionGeometry` is the one source of positions: every ray, patch, projection matrix
and backprojection in monai-gnerf is derived from it (see ``ARCHITECTURE.md``).
"""

from __future__ import annotations

from monai_gnerf.geometry import grids as _grids
from monai_gnerf.geometry import projection as _projection
from monai_gnerf.geometry.grids import *  # noqa: F403
from monai_gnerf.geometry.projection import *  # noqa: F403

__all__ = [*_grids.__all__, *_projection.__all__]
