"""Tests of ``GnerfReconstructionLib.geometry`` (no Slicer)."""

from __future__ import annotations

from GnerfReconstructionLib.geometry import geometry_presets


def test_geometry_presets():
    from monai_gnerf.geometry import list_presets

    assert geometry_presets() == list_presets()
