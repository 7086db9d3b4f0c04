"""Measuring quality, always with an explicit data range: image metrics (PSNR, SSIM 2D/3D, GMSD),
feature-distribution metrics (FID, KID) and test-set evaluation."""

from __future__ import annotations

from monai_gnerf.metrics import evaluation as _evaluation
from monai_gnerf.metrics import features as _features
from monai_gnerf.metrics import image as _image
from monai_gnerf.metrics.evaluation import *  # noqa: F403
from monai_gnerf.metrics.features import *  # noqa: F403
from monai_gnerf.metrics.image import *  # noqa: F403

__all__ = [*_evaluation.__all__, *_features.__all__, *_image.__all__]
