"""Networks (plain ``nn.Module``s): coordinate encodings, attenuation fields, the generative
radiance-field generator (and its file), the patch discriminator, the linear (PCA) volume model."""

from __future__ import annotations

from monai_gnerf.networks import discriminator as _discriminator
from monai_gnerf.networks import encodings as _encodings
from monai_gnerf.networks import fields as _fields
from monai_gnerf.networks import generator as _generator
from monai_gnerf.networks import generator_file as _generator_file
from monai_gnerf.networks import pca as _pca
from monai_gnerf.networks.discriminator import *  # noqa: F403
from monai_gnerf.networks.encodings import *  # noqa: F403
from monai_gnerf.networks.fields import *  # noqa: F403
from monai_gnerf.networks.generator import *  # noqa: F403
from monai_gnerf.networks.generator_file import *  # noqa: F403
from monai_gnerf.networks.pca import *  # noqa: F403

__all__ = [
    *_discriminator.__all__,
    *_encodings.__all__,
    *_fields.__all__,
    *_generator.__all__,
    *_generator_file.__all__,
    *_pca.__all__,
]
