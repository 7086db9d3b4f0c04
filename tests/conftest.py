"""Shared fixtures: small analytic phantoms and synthetic CTs (no downloaded data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/dicom_utils.py, tests/gnerf_testing.py

from gnerf_testing import GRID, VOXEL_MM, tiny_config, tiny_geometry  # noqa: E402

from monai_gnerf.data import PhantomPopulation, PhantomViewDataset, shepp_logan_phantom  # noqa: E402
from monai_gnerf.engines import train_prior  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smooth_phantom():
    """Shepp-Logan-like head with a smooth (profile 2) density, half-size 100 mm."""
    return shepp_logan_phantom(size_mm=100.0, profile=2)


@pytest.fixture(scope="session")
def smooth_volume(smooth_phantom):
    """The smooth phantom sampled on a 128^3 grid of 1.6 mm voxels (float64 MetaTensor)."""
    return smooth_phantom.voxelize((GRID,) * 3, (VOXEL_MM,) * 3, dtype=torch.float64)


@pytest.fixture(scope="session")
def one_subject():
    geometry = tiny_geometry()
    return geometry, PhantomViewDataset(PhantomPopulation("chest"), geometry, [0])


@pytest.fixture(scope="session")
def trained_prior(one_subject):
    geometry, dataset = one_subject
    return train_prior(dataset, geometry, tiny_config(300), progress=False)

