"""Rendering: volume projectors (Joseph, trilinear, Siddon), shared ray sampling and compositing,
GRAF patch sampling and analytic reconstruction (FDK/FBP)."""

from __future__ import annotations

from monai_gnerf.render import fdk as _fdk
from monai_gnerf.render import patches as _patches
from monai_gnerf.render import projector as _projector
from monai_gnerf.render import sampling as _sampling
from monai_gnerf.render.fdk import *  # noqa: F403
from monai_gnerf.render.patches import *  # noqa: F403
from monai_gnerf.render.projector import *  # noqa: F403
from monai_gnerf.render.sampling import *  # noqa: F403

__all__ = [*_fdk.__all__, *_patches.__all__, *_projector.__all__, *_sampling.__all__]
