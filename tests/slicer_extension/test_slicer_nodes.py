"""Tests of ``GnerfReconstructionLib.nodes`` on a real MRML scene (``slicer-core``): X-ray nodes to line integrals."""

from __future__ import annotations

import numpy as np
from slicer_testing import xray_nodes


def test_intensities_become_line_integrals(slicer_module, nodes_module, tiny_drrs):
    slicer, nodes_lib = slicer_module, nodes_module
    scene = slicer.vtkMRMLScene()
    drrs = tiny_drrs[0][:2]
    ids = xray_nodes(slicer, scene, (4000.0 * np.exp(-drrs)).astype(np.float32), 0.5)
    nodes = [scene.GetNodeByID(i) for i in ids]
    stack, spacing = nodes_lib.xray_images(nodes, values_are_intensities=True)
    i0_offset = -np.log(np.exp(-drrs).max(axis=(1, 2), keepdims=True))  # I0 is the brightest pixel
    np.testing.assert_allclose(stack, drrs - i0_offset, atol=1e-4)
    assert spacing == (0.5, 0.5)
    raw, _ = nodes_lib.xray_images(nodes[:1], values_are_intensities=False)
    np.testing.assert_allclose(raw[0], 4000.0 * np.exp(-drrs[0]), rtol=1e-6)
