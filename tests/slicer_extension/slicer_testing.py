"""Shared helpers of the 3D Slicer extension's tests: the extension's paths, X-ray nodes, node checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "slicer_extension"
MODULE_NAME = "GnerfReconstruction"
MODULE_DIR = EXTENSION / MODULE_NAME
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE_NAME}.ui"
MODULE_FILE = MODULE_DIR / f"{MODULE_NAME}.py"
BUNDLE = ROOT / "bundle"

TINY_VIEWS = 6
TINY_PIXELS = 32
TINY_PIXEL_MM = 18.75  # 32 pixels of 18.75 mm: the 600 mm detector of chest_cbct, coarsely


def xray_nodes(slicer, scene, images: np.ndarray, spacing_mm: float) -> tuple[str, ...]:
    """IDs of new one-slice volume nodes ``X-ray 0``, ``X-ray 1``... holding ``images`` (views, rows, cols)."""
    ids = []
    for view, image in enumerate(images):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"X-ray {view}")
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(image[None]))
        node.SetSpacing(spacing_mm, spacing_mm, 1.0)
        ids.append(node.GetID())
    return tuple(ids)


def ijk_to_ras(slicer, node) -> np.ndarray:
    """The IJK-to-RAS matrix of a volume node as an array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def assert_node_matches_nifti(slicer, node, path: Path) -> None:
    """The node holds the NIfTI's array, its IJK-to-RAS matrix is the NIfTI's affine."""
    import nibabel as nib

    image = nib.load(str(path))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), np.asarray(image.dataobj).transpose(2, 1, 0))
    np.testing.assert_allclose(ijk_to_ras(slicer, node), image.affine, atol=1e-5)


def alive(pid: int) -> bool:
    """Whether the process ``pid`` still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.is_file() and status.read_text().split()[2] == "Z")  # a zombie is dead
