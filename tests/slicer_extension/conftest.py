"""Fixtures of the 3D Slicer extension's tests: ``slicer-core``, the module's library, tiny X-rays.

Puts the module folder (for ``GnerfReconstructionLib`` and ``GnerfReconstruction``) and this folder
(for ``slicer_testing``) on ``sys.path``. The fixtures needing ``slicer-core`` skip the test when it is
not installed.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # slicer_testing.py

from slicer_testing import MODULE_DIR, TINY_PIXEL_MM, TINY_PIXELS, TINY_VIEWS  # noqa: E402

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session")
def slicer_module():
    """The ``slicer`` package of slicer-core; skips the test when it is not installed."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core")
    return slicer


@pytest.fixture
def nodes_module(slicer_module):
    """``GnerfReconstructionLib.nodes`` (it imports ``slicer``)."""
    from GnerfReconstructionLib import nodes

    return nodes


@pytest.fixture
def logic_module(slicer_module):
    """``GnerfReconstructionLib.logic`` (it imports ``slicer``)."""
    from GnerfReconstructionLib import logic

    return logic


@pytest.fixture(scope="session")
def tiny_drrs():
    """Line integrals ``(6, 32, 32)`` of the example CT on chest_cbct's distances, and their geometry."""
    import torch

    from monai_gnerf.data import example_ct_path
    from monai_gnerf.geometry import load_geometry
    from monai_gnerf.io import load_ct
    from monai_gnerf.transforms import GenerateDRR, HUToAttenuation

    geometry = replace(
        load_geometry("chest_cbct"), detector_shape=(TINY_PIXELS, TINY_PIXELS), pixel_spacing_mm=(TINY_PIXEL_MM,) * 2
    ).with_uniform_angles(TINY_VIEWS)
    with torch.no_grad():
        drr = GenerateDRR(geometry)(HUToAttenuation()(load_ct(example_ct_path())))
    return drr.as_tensor().numpy().astype(np.float32), geometry
