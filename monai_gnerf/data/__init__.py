"""Data: the embedded example CT, analytic phantoms, procedural populations and view datasets."""

from __future__ import annotations

from monai_gnerf.data import datasets as _datasets
from monai_gnerf.data import examples as _examples
from monai_gnerf.data import phantoms as _phantoms
from monai_gnerf.data import population as _population
from monai_gnerf.data.datasets import *  # noqa: F403
from monai_gnerf.data.examples import *  # noqa: F403
from monai_gnerf.data.phantoms import *  # noqa: F403
from monai_gnerf.data.population import *  # noqa: F403

__all__ = [*_datasets.__all__, *_examples.__all__, *_phantoms.__all__, *_population.__all__]
