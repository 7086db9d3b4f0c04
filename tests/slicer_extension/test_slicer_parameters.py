"""Tests of ``GnerfReconstructionLib.parameters``: the panel's choices, as strings and view angles (no Slicer)."""

from __future__ import annotations

import pytest
from GnerfReconstructionLib.parameters import (
    GnerfInputProblem,
    ReconstructionParameters,
    parameters_from_strings,
    parameters_to_strings,
    parse_angles,
)


def test_parameters_round_trip_through_strings():
    params = ReconstructionParameters(
        source="ct", xray_node_ids=("vtkMRMLScalarVolumeNode1", "vtkMRMLScalarVolumeNode2"), method="fdk",
        custom_geometry=True, source_to_isocenter_mm=600.0, num_views=7, budget_s=3.0, keep_temp=True,
    )  # fmt: skip
    assert parameters_from_strings(parameters_to_strings(params)) == params
    assert parameters_from_strings({"method": "no-such-method", "num_views": "x"}) == ReconstructionParameters()
    with pytest.raises(ValueError):
        ReconstructionParameters(device="tpu")


def test_view_angles():
    assert parse_angles("", 4) == [0.0, 90.0, 180.0, 270.0]
    assert parse_angles("", 2, (0.0, 90.0)) == [0.0, 90.0]  # the preset's when it has as many views
    assert parse_angles("0, 90; 45", 3) == [0.0, 90.0, 45.0]
    with pytest.raises(GnerfInputProblem, match="one finite view angle per X-ray"):
        parse_angles("0, 90", 3)
    with pytest.raises(GnerfInputProblem, match="numbers"):
        parse_angles("zero", 1)


def test_panel_defaults_are_the_library_defaults():
    """Slicer's Python cannot import the library at panel start, so its defaults are copies: pin them."""
    from monai_gnerf.apps.sparse_view import DemoConfig
    from monai_gnerf.engines import ReconstructionConfig
    from monai_gnerf.geometry import load_geometry

    panel = ReconstructionParameters()
    preset = load_geometry(panel.geometry)
    assert (panel.num_views, panel.geometry) == (DemoConfig().views, DemoConfig().geometry)
    assert panel.method == ReconstructionConfig().method
    assert panel.budget_s == ReconstructionConfig().budget_s
    assert (panel.source_to_isocenter_mm, panel.source_to_detector_mm) == (
        preset.source_to_isocenter_mm, preset.source_to_detector_mm,
    )  # fmt: skip
