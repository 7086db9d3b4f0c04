"""Ignite engines: sparse-view field fitting, adversarial prior training, single-view fitting,
and the handlers they share (logging, progress, budgets, checkpoints, resume, Ctrl-C)."""

from __future__ import annotations

from monai_gnerf.engines import field_grids as _field_grids
from monai_gnerf.engines import handlers as _handlers
from monai_gnerf.engines import prior as _prior
from monai_gnerf.engines import reconstruction as _reconstruction
from monai_gnerf.engines import single_view as _single_view
from monai_gnerf.engines.field_grids import *  # noqa: F403
from monai_gnerf.engines.handlers import *  # noqa: F403
from monai_gnerf.engines.prior import *  # noqa: F403
from monai_gnerf.engines.reconstruction import *  # noqa: F403
from monai_gnerf.engines.single_view import *  # noqa: F403

__all__ = [*_field_grids.__all__, *_handlers.__all__, *_prior.__all__, *_reconstruction.__all__, *_single_view.__all__]
