"""MONAI transforms of monai-gnerf, each an array transform with its dictionary (``...d``) wrapper.

Example::

    from monai.transforms import Compose, LoadImaged
    from monai_gnerf.transforms import BodyMaskd as _BodyMaskd
from monai_gnerf.transforms import GenerateDRRd as _GenerateDRRd
from monai_gnerf.transforms import HUToAttenuationd as _HUToAttenuationd

    pipeline = Compose([
        LoadImaged("image", ensure_channel_first=True),
        BodyMaskd("image", mask_key="mask"),              # mNeRF support mask (HU input)
        HUToAttenuationd("image"),                         # HU -> 1/mm
        GenerateDRRd("image", geometry="mednerf_chest"),   # -> (72, 128, 128) line integrals
    ])
"""

from __future__ import annotations

from monai_gnerf.transforms import drr as _drr
from monai_gnerf.transforms import intensity as _intensity
from monai_gnerf.transforms import io as _io
from monai_gnerf.transforms import masks as _masks
from monai_gnerf.transforms import xray as _xray
from monai_gnerf.transforms.drr import *  # noqa: F403
from monai_gnerf.transforms.intensity import *  # noqa: F403
from monai_gnerf.transforms.io import *  # noqa: F403
from monai_gnerf.transforms.masks import *  # noqa: F403
from monai_gnerf.transforms.xray import *  # noqa: F403

__all__ = [*_drr.__all__, *_intensity.__all__, *_io.__all__, *_masks.__all__, *_xray.__all__]
