"""MRML nodes to files and back: X-ray and CT volume nodes in, NIfTI volumes and projection stacks out;
results placed in the subject hierarchy under their source's study, rendered views as a Sequence.

X-ray volume nodes become a ``monai_gnerf`` projection folder (line integrals plus ``geometry.json``)
and a CT volume node a NIfTI file in HU, its IJK-to-RAS matrix as the affine; what the bundle wrote
(``reconstruction.nii.gz``, ``volume.nii.gz``) becomes a new scalar volume node whose IJK-to-RAS
matrix is the NIfTI affine, and projection stacks (simulated X-rays, rendered views) a volume laid
out for browsing in the coronal slice view. It runs inside the Slicer application and, for tests,
on a plain ``slicer.vtkMRMLScene`` from the PyPI package ``slicer-core``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer

from .geometry import xray_geometry
from .job import GnerfProcessError
from .parameters import GnerfInputProblem, ReconstructionParameters

__all__ = [
    "input_volume_node",
    "load_views_nifti",
    "load_volume_nifti",
    "views_ijk_to_ras",
    "write_ct_nifti",
    "write_projection_folder",
    "xray_images",
    "xray_intake_file",
]

_LOGGER = logging.getLogger("GnerfReconstruction")
_INTENSITY_FLOOR = 1e-6  # smallest I/I0 before the logarithm (about 14 in line-integral units)


def input_volume_node(scene, node_id: str, what: str):
    """The scalar volume node ``node_id`` of ``scene``, with image data.

    Args:
        scene: the MRML scene.
        node_id: the node's ID (empty when nothing is selected).
        what: what the node is for, named in the message (``"CT volume"``).

    Raises:
        GnerfInputProblem: no such node, not a scalar volume, or no image data.
    """
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetImageData() is None:
        raise GnerfInputProblem(f"select a {what} (a scalar volume with image data).")
    return node


def _world_ijk_to_ras(node) -> np.ndarray:
    """IJK-to-RAS of a node with its parent linear transforms applied."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise GnerfInputProblem(f"{node.GetName()} is under a non-linear transform: harden it first.")
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(to_world) @ ijk_to_ras
    return np.asarray(ijk_to_ras, dtype=np.float64)


def xray_images(nodes: Sequence, values_are_intensities: bool) -> tuple[np.ndarray, tuple[float, float]]:
    """Line integrals ``(views, rows, cols)`` (float32) and ``(row, col)`` pixel spacing of X-ray nodes.

    The node's voxel grid is the detector image as stored: row ``j`` runs from the top (superior) of
    the radiograph, column ``i`` from the image's left (the patient's right on a PA view).

    Args:
        nodes: one-slice scalar volume nodes of equal size and spacing.
        values_are_intensities: convert intensities with ``-ln(I / I0)``, ``I0`` = brightest pixel.
    """
    images, spacings = [], []
    for node in nodes:
        array = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float64)
        if array.ndim != 3 or array.shape[0] != 1:
            raise GnerfInputProblem(
                f"{node.GetName()} has {array.shape[0]} slices: an X-ray is a one-slice volume "
                "(use the CT input to simulate X-rays from a volume)."
            )
        image = array[0]
        if not np.isfinite(image).all():
            raise GnerfInputProblem(f"{node.GetName()} holds NaN or infinite values.")
        if values_are_intensities:
            i0 = float(image.max())
            if i0 <= 0:
                raise GnerfInputProblem(f"{node.GetName()} has no positive intensity to take as I0.")
            image = -np.log(np.clip(image / i0, _INTENSITY_FLOOR, 1.0))
        images.append(image)
        spacing_i, spacing_j, _ = node.GetSpacing()
        spacings.append((float(spacing_j), float(spacing_i)))
    if not images:
        raise GnerfInputProblem("select at least one X-ray volume.")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise GnerfInputProblem(f"all X-rays must have the same size; got {sorted(shapes)} (rows, columns).")
    if any(not np.allclose(s, spacings[0], rtol=1e-3) for s in spacings):
        raise GnerfInputProblem("all X-rays must have the same pixel spacing.")
    return np.stack(images).astype(np.float32), spacings[0]


def write_projection_folder(folder: Path, nodes: Sequence, params: ReconstructionParameters) -> Path:
    """Write X-ray nodes as a ``monai_gnerf`` projection folder (line integrals and ``geometry.json``)."""
    import torch

    from monai_gnerf.io import save_projections

    stack, spacing = xray_images(nodes, params.values_are_intensities)
    geometry = xray_geometry(params, stack.shape[1:], spacing)
    extra = {"source": "3D Slicer X-ray volume nodes", "nodes": [n.GetName() for n in nodes]}
    return save_projections(folder, torch.from_numpy(stack), geometry, extra)


def _dicom_instance_file(node) -> Path | None:
    """The DICOM file a node was loaded from, through Slicer's DICOM database (absent outside Slicer)."""
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return None
    found = database.fileForInstance(uids[0])
    return Path(found) if found and Path(found).is_file() else None


def _storage_file(node) -> Path | None:
    """The file a node was loaded from or saved to, when it still exists and the intake reads it."""
    from monai_gnerf.io import XRAY_IMAGE_SUFFIXES  # what the library's intake reads, besides DICOM

    storage = node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else None
    if not name or not Path(name).is_file() or not name.lower().endswith((".dcm", *XRAY_IMAGE_SUFFIXES)):
        return None
    return Path(name)


def xray_intake_file(folder: Path, node, values_are_intensities: bool) -> Path:
    """The file of an X-ray node that the library's X-ray intake reads (``inference.json --xray``).

    A node loaded from DICOM or from an image file is passed as that file, so its modality, VOI and
    Presentation LUTs, photometric interpretation and pixel spacing reach the intake untouched. A
    node that exists only in the scene (or whose values are intensities) is written as a one-slice
    NIfTI of display values (bright = attenuating) with the node's pixel spacing.

    Args:
        folder: where to write the NIfTI when one is needed.
        node: a one-slice scalar volume node.
        values_are_intensities: the node's values are intensities ``I``; they are converted to
            line integrals first.
    """
    if not values_are_intensities:
        original = _dicom_instance_file(node) or _storage_file(node)
        if original is not None:
            return original
    import nibabel as nib

    (image,), (row_mm, col_mm) = xray_images([node], values_are_intensities)
    affine = np.diag([col_mm, row_mm, 1.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "xray.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image.T[:, :, None]), affine), str(path))  # (x=col, y=row, 1)
    return path


def write_ct_nifti(path: Path, node) -> Path:
    """Write a CT volume node as NIfTI (float32 HU) whose affine is the node's IJK-to-RAS matrix."""
    import nibabel as nib

    array = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)  # (K, J, I)
    if array.ndim != 3 or min(array.shape) < 2:
        raise GnerfInputProblem(f"{node.GetName()} is not a 3D volume (shape {array.shape}); choose a CT.")
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), _world_ijk_to_ras(node))
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return path


def _new_volume_node(scene, name: str, array_kji: np.ndarray, ijk_to_ras: np.ndarray):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=np.float64)))
    try:
        node.CreateDefaultDisplayNodes()
    except Exception:  # a bare scene without color tables: the node is still usable  # noqa: BLE001
        _LOGGER.debug("no default display node for %s", name)
    return node


def load_volume_nifti(scene, path: Path, name: str):
    """A new scalar volume node holding a 3D NIfTI volume, its IJK-to-RAS matrix the NIfTI affine."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise GnerfProcessError(f"{path.name} is not a 3D volume (shape {data.shape}).")
    return _new_volume_node(scene, name, data.transpose(2, 1, 0), image.affine)


def views_ijk_to_ras(pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """IJK-to-RAS of a projection stack laid out as radiographs in the coronal slice view.

    Column ``i`` runs towards the patient's left (-R) so column 0 is on the screen's left, row ``j``
    runs inferior (-S) so row 0 is at the top, the view index ``k`` runs anterior (scroll the
    coronal slider to browse the views, 1 mm apart).
    """
    row_mm, col_mm = pixel_spacing_mm
    matrix = np.eye(4)
    matrix[:3, :3] = [[-col_mm, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -row_mm, 0.0]]
    return matrix


def load_views_nifti(scene, path: Path, name: str, pixel_spacing_mm: tuple[float, float] | None = None):
    """A new volume node with a projection stack NIfTI (array ``(cols, rows, views)``), one view per slice.

    Args:
        scene: the MRML scene.
        path: the NIfTI stack (``projections.nii.gz`` of a projection folder or of rendered views).
        name: node name.
        pixel_spacing_mm: ``(row, col)`` pixel size; default: the NIfTI's voxel size.
    """
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if pixel_spacing_mm is None:
        zooms = image.header.get_zooms()
        pixel_spacing_mm = (float(zooms[1]), float(zooms[0]))
    return _new_volume_node(scene, name, data.transpose(2, 1, 0), views_ijk_to_ras(pixel_spacing_mm))


def place_under_study(scene, nodes: Sequence, source_node) -> None:
    """Put result nodes in the subject hierarchy where their source is (its study, under its patient).

    Nothing moves when the source sits at the top of the hierarchy (a node loaded from a file).
    """
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    source = hierarchy.GetItemByDataNode(source_node)
    parent = hierarchy.GetItemParent(source) if source else hierarchy.GetSceneItemID()
    if parent == hierarchy.GetSceneItemID():
        return
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:  # a scene without Slicer's subject hierarchy plugins (slicer-core) makes no item by itself
            hierarchy.CreateItem(parent, node)


def _sequences_logic(scene):
    """Slicer's Sequences module logic (in Slicer), or one made for ``scene`` (``slicer-core``)."""
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences"):
        return modules.sequences.logic()
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic


def views_sequence(scene, views_node, angles_deg: Sequence[float], name: str):
    """A Sequence node of a projection stack's views, indexed by angle (deg), and its browser.

    Each item is one radiograph (a one-slice volume in the coronal layout of
    :func:`views_ijk_to_ras`); the browser's proxy node shows the selected angle, and the
    sequence toolbar plays the orbit.

    Returns:
        ``(sequence node, browser node)``.
    """
    import vtk

    stack = slicer.util.arrayFromVolume(views_node)  # (views, rows, cols)
    if len(angles_deg) != stack.shape[0]:
        raise ValueError(f"{len(angles_deg)} angles for {stack.shape[0]} views.")
    matrix = vtk.vtkMatrix4x4()
    views_node.GetIJKToRASMatrix(matrix)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("angle")
    sequence.SetIndexUnit("deg")
    sequence.SetIndexType(sequence.NumericIndex)
    for view, angle in enumerate(angles_deg):
        item = slicer.vtkMRMLScalarVolumeNode()
        item.SetName(f"{name} {angle:g} deg")
        item.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(item, np.ascontiguousarray(stack[view : view + 1]))
        sequence.SetDataNodeAtValue(item, f"{angle:g}")
    browser = scene.AddNode(slicer.vtkMRMLSequenceBrowserNode())
    browser.SetName(f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    _sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
    return sequence, browser
