"""Reading and writing: CT volumes, projection sets, radiographs, checkpoints, Plastimatch interop.

Every writer is atomic (:mod:`monai_gnerf.io.atomic`); every reader reports a problem a user can
fix as one :class:`~monai_gnerf.errors.GnerfInputError` sentence.
"""

from __future__ import annotations

from monai_gnerf.io import atomic as _atomic
from monai_gnerf.io import checkpoints as _checkpoints
from monai_gnerf.io import dicom_series as _dicom_series
from monai_gnerf.io import projections as _projections
from monai_gnerf.io import volumes as _volumes
from monai_gnerf.io import xray as _xray
from monai_gnerf.io.atomic import *  # noqa: F403
from monai_gnerf.io.checkpoints import *  # noqa: F403
from monai_gnerf.io.dicom_series import *  # noqa: F403
from monai_gnerf.io.projections import *  # noqa: F403
from monai_gnerf.io.volumes import *  # noqa: F403
from monai_gnerf.io.xray import *  # noqa: F403

__all__ = [*_atomic.__all__, *_checkpoints.__all__, *_dicom_series.__all__, *_projections.__all__, *_volumes.__all__, *_xray.__all__]
