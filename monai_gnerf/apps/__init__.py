"""Applications: the jobs behind the command line, the MONAI bundle and the Slicer module
(DRR simulation, sparse-view reconstruction and the demo, prior training, single-view
reconstruction), each ``job(inputs..., out, config, device)`` with one config dataclass."""

from __future__ import annotations

from monai_gnerf.apps import common as _common
from monai_gnerf.apps import demo as _demo
from monai_gnerf.apps import drr as _drr
from monai_gnerf.apps import figures as _figures
from monai_gnerf.apps import generative as _generative
from monai_gnerf.apps import sparse_view as _sparse_view
from monai_gnerf.apps.common import *  # noqa: F403
from monai_gnerf.apps.demo import *  # noqa: F403
from monai_gnerf.apps.drr import *  # noqa: F403
from monai_gnerf.apps.figures import *  # noqa: F403
from monai_gnerf.apps.generative import *  # noqa: F403
from monai_gnerf.apps.sparse_view import *  # noqa: F403

__all__ = [*_common.__all__, *_demo.__all__, *_drr.__all__, *_figures.__all__, *_generative.__all__, *_sparse_view.__all__]
