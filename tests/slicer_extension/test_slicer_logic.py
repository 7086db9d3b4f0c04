"""Tests of ``GnerfReconstructionLib.logic``, the planner, on a real MRML scene (``slicer-core``).

The command lines it plans for the bundle; input problems reported before anything runs; the
parameter node; and tiny runs through the MONAI bundle in ``bundle/`` as a separate process (a CT
node to simulated X-rays and FDK, a single X-ray to the generative method), the output node holding
the array and IJK-to-RAS matrix of the NIfTI the bundle wrote.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from GnerfReconstructionLib.parameters import GnerfInputProblem, ReconstructionParameters
from slicer_testing import BUNDLE, TINY_PIXEL_MM, assert_node_matches_nifti, ijk_to_ras, xray_nodes


def _options(command: list[str]) -> dict[str, str]:
    """``--key value`` pairs of a ``python -m monai.bundle run`` command line."""
    assert command[1:4] == ["-m", "monai.bundle", "run"]
    keys, values = command[4::2], command[5::2]
    assert all(key.startswith("--") for key in keys) and len(keys) == len(values)
    return {key[2:]: value for key, value in zip(keys, values)}


def test_command_lines_override_config_fields_under_their_node(slicer_module, logic_module, tmp_path):
    slicer, logic = slicer_module, logic_module
    command = logic.bundle_command("python", BUNDLE, "drr.json", {"output_dir": tmp_path, "drr#views": None})
    assert command[:4] == ["python", "-m", "monai.bundle", "run"]
    assert _options(command) == {
        "config_file": str(BUNDLE / "configs" / "drr.json"), "bundle_root": str(BUNDLE), "output_dir": str(tmp_path),
    }  # fmt: skip

    scene = slicer.vtkMRMLScene()
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    slicer.util.updateVolumeFromArray(ct, np.zeros((4, 8, 8), np.float32))
    core = logic.GnerfReconstructionLogicCore(scene)
    params = ReconstructionParameters(
        source="ct", ct_node_id=ct.GetID(), num_views=3, method="grid", budget_s=5.0, spacing_mm=8.0
    )
    drr, reconstruct = core._plan(params, BUNDLE, tmp_path).steps
    assert drr.args[0] == sys.executable
    assert _options(drr.args) == {
        "config_file": str(BUNDLE / "configs" / "drr.json"), "bundle_root": str(BUNDLE),
        "dataset_dir": str(tmp_path / "ct.nii.gz"), "output_dir": str(tmp_path / "simulated"), "device": "cpu",
        "drr#geometry": "chest_cbct", "drr#views": "3",
    }  # fmt: skip
    (tmp_path / "simulated" / "ct").mkdir(parents=True)
    (tmp_path / "simulated" / "ct" / "geometry.json").write_text("{}")  # what drr.json writes, in short
    assert _options(reconstruct.args()) == {
        "config_file": str(BUNDLE / "configs" / "reconstruct.json"), "bundle_root": str(BUNDLE),
        "projections_dir": str(tmp_path / "simulated" / "ct"), "output_dir": str(tmp_path / "output"), "device": "cpu",
        "fit#method": "grid", "fit#budget_s": "5.0", "sparse_view#spacing_mm": "8.0",
    }  # fmt: skip
    fdk = replace(params, method="fdk", spacing_mm=0.0)
    fdk_options = _options(core._plan(fdk, BUNDLE, tmp_path).steps[1].args())
    assert fdk_options["fit#method"] == "fdk"
    assert "fit#budget_s" not in fdk_options and "sparse_view#spacing_mm" not in fdk_options  # the config's defaults

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    generative = replace(params, method="generative", checkpoint=str(checkpoint))
    drr, inference = core._plan(generative, BUNDLE, tmp_path).steps
    assert _options(drr.args)["drr#views"] == "1"
    assert _options(inference.args()) == {
        "config_file": str(BUNDLE / "configs" / "inference.json"), "bundle_root": str(BUNDLE),
        "xray": str(tmp_path / "simulated" / "ct" / "png" / "view_000.png"), "checkpoint": str(checkpoint),
        "output_dir": str(tmp_path / "output"), "device": "cpu",
    }  # fmt: skip


def test_ct_node_to_simulated_xrays_and_fdk_through_the_bundle(slicer_module, nodes_module, logic_module):
    from monai_gnerf.data import example_ct_path

    slicer, nodes_lib, logic = slicer_module, nodes_module, logic_module
    scene = slicer.vtkMRMLScene()
    ct = nodes_lib.load_volume_nifti(scene, example_ct_path(), "chest CT")
    params = ReconstructionParameters(source="ct", ct_node_id=ct.GetID(), num_views=3, method="fdk", spacing_mm=8.0, keep_temp=True)
    result = logic.GnerfReconstructionLogicCore(scene).run(params)
    try:
        assert_node_matches_nifti(slicer, result.volume_node, result.work_dir / "output" / "reconstruction.nii.gz")
        ct_to_ras, out_to_ras = ijk_to_ras(slicer, ct), ijk_to_ras(slicer, result.volume_node)
        ct_extent = np.abs(ct_to_ras[:3, :3]).sum(axis=0) * np.array(ct.GetImageData().GetDimensions())
        out_extent = np.abs(out_to_ras[:3, :3]).sum(axis=0) * np.array(result.volume_node.GetImageData().GetDimensions())
        np.testing.assert_allclose(out_extent, ct_extent, rtol=0.1)  # the CT's field of view, on an 8 mm grid
        views = slicer.util.arrayFromVolume(result.views_node)
        stack = logic.find_projection_folder(result.work_dir / "simulated") / "projections.nii.gz"
        import nibabel as nib

        np.testing.assert_array_equal(views, np.asarray(nib.load(str(stack)).dataobj).transpose(2, 1, 0))
        assert views.shape == (3, 160, 160)  # chest_cbct's detector
        np.testing.assert_allclose(ijk_to_ras(slicer, result.views_node), nodes_lib.views_ijk_to_ras((3.75, 3.75)))
    finally:
        import shutil

        shutil.rmtree(result.work_dir, ignore_errors=True)


def test_input_problems_are_reported_before_anything_runs(slicer_module, logic_module, tiny_drrs, tmp_path):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    core = logic.GnerfReconstructionLogicCore(scene)
    with pytest.raises(GnerfInputProblem, match="select at least one X-ray"):
        core.start(ReconstructionParameters(method="fdk"))
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "volume")
    slicer.util.updateVolumeFromArray(ct, np.zeros((4, 8, 8), np.float32))
    with pytest.raises(GnerfInputProblem, match="one-slice volume"):
        core.start(ReconstructionParameters(xray_node_ids=(ct.GetID(),), method="fdk"))
    small = xray_nodes(slicer, scene, np.zeros((1, 8, 8), np.float32), 1.0)
    large = xray_nodes(slicer, scene, np.zeros((1, 9, 8), np.float32), 1.0)
    with pytest.raises(GnerfInputProblem, match="same size"):
        core.start(ReconstructionParameters(xray_node_ids=small + large, method="fdk"))
    with pytest.raises(GnerfInputProblem, match="source_to_detector_mm"):
        core.start(replace(ReconstructionParameters(xray_node_ids=small, method="fdk"), custom_geometry=True,
                           source_to_isocenter_mm=1500.0, source_to_detector_mm=1000.0))  # fmt: skip
    if (BUNDLE / "configs" / "inference.json").is_file():
        missing = str(tmp_path / "none.pt")
        with pytest.raises(GnerfInputProblem, match="checkpoint"):
            core.start(ReconstructionParameters(xray_node_ids=small, method="generative", checkpoint=missing))
    with pytest.raises(GnerfInputProblem, match="has no configs/reconstruct.json"):
        core.start(ReconstructionParameters(xray_node_ids=small, method="fdk", bundle_dir=str(tmp_path)))


def test_xray_nodes_reach_the_library_intake_as_their_own_files(slicer_module, nodes_module, tiny_drrs, tmp_path):
    import itk

    from monai_gnerf.io import load_xray

    slicer, nodes_lib = slicer_module, nodes_module
    scene = slicer.vtkMRMLScene()
    image = tiny_drrs[0][0]
    # a node living only in the scene: written as a one-slice NIfTI with the node's spacing
    (node_id,) = xray_nodes(slicer, scene, image[None], TINY_PIXEL_MM)
    written = nodes_lib.xray_intake_file(tmp_path / "xray", scene.GetNodeByID(node_id), False)
    xray = load_xray(written)
    assert not xray.is_line_integral and xray.pixel_spacing_mm == (TINY_PIXEL_MM, TINY_PIXEL_MM)
    np.testing.assert_allclose(xray.values.numpy(), image, rtol=1e-6)
    # a node loaded from an NRRD file (Slicer's default format): that file itself
    nrrd = tmp_path / "cr.nrrd"
    itk.imwrite(itk.image_from_array(image.astype(np.float32)), str(nrrd))
    node = scene.GetNodeByID(node_id)  # what loading a file does: a storage node naming it
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(nrrd))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert nodes_lib.xray_intake_file(tmp_path / "xray2", node, False) == nrrd
    assert nodes_lib.xray_intake_file(tmp_path / "xray3", node, True).name == "xray.nii.gz"  # intensities: converted
    jpeg = tmp_path / "cxr.jpg"  # any format the library's intake reads is passed as it is
    jpeg.write_bytes(b"")
    storage.SetFileName(str(jpeg))
    assert nodes_lib.xray_intake_file(tmp_path / "xray4", node, False) == jpeg


def test_parameter_node_round_trip(slicer_module, logic_module):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "GnerfReconstruction")
    params = ReconstructionParameters(source="ct", ct_node_id="vtkMRMLScalarVolumeNode3", method="naf", budget_s=30.0)
    logic.GnerfReconstructionLogicCore.write_parameters(node, params)
    assert logic.GnerfReconstructionLogicCore.read_parameters(node) == params


def test_selected_nodes_are_node_references_that_survive_a_scene_reload_and_a_deletion(slicer_module, logic_module):
    slicer, core = slicer_module, logic_module.GnerfReconstructionLogicCore
    scene = slicer.vtkMRMLScene()
    xrays = [scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"X-ray {i}").GetID() for i in range(3)]
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT").GetID()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "GnerfReconstruction")
    core.write_parameters(node, ReconstructionParameters(xray_node_ids=(xrays[2], xrays[0]), ct_node_id=ct))
    assert node.GetNumberOfNodeReferences("xray") == 2 and node.GetNodeReference("ct").GetName() == "CT"
    assert "xray_node_ids" not in node.GetParameterNames()  # references, not ID strings
    scene.SetSaveToXMLString(1)
    scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "already here")  # the saved IDs are taken: imported nodes get new ones
    reloaded.SetLoadFromXMLString(1)
    reloaded.SetSceneXMLString(scene.GetSceneXMLString())
    reloaded.Import()
    (module_node,) = [n for n in reloaded.GetNodesByClass("vtkMRMLScriptedModuleNode") if n.GetName() == "GnerfReconstruction"]
    params = core.read_parameters(module_node)
    assert [reloaded.GetNodeByID(i).GetName() for i in params.xray_node_ids] == ["X-ray 2", "X-ray 0"]  # order kept
    assert reloaded.GetNodeByID(params.ct_node_id).GetName() == "CT"
    scene.RemoveNode(scene.GetNodeByID(xrays[2]))
    assert core.read_parameters(node).xray_node_ids == (xrays[0],)  # a deleted node leaves the selection


def _quick_inference_bundle(tmp_path: Path) -> Path:
    """A copy of the bundle whose inference.json fits with a few iterations (seconds, not minutes)."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models"))
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["fit"].update(restarts=1, latent_iterations=3, finetune_iterations=3)
    config["single_view"].update(volume_size=16)
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def test_single_view_generative_through_the_bundle(slicer_module, logic_module, tiny_drrs, tmp_path):
    checkpoints = sorted((BUNDLE / "models").glob("*.pt"))
    if not checkpoints:
        pytest.skip("the bundle ships no model checkpoint")
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ids = xray_nodes(slicer, scene, tiny_drrs[0][:1], TINY_PIXEL_MM)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
    hierarchy.CreateItem(study, scene.GetNodeByID(ids[0]))  # the X-ray, as a DICOM import files it
    params = ReconstructionParameters(
        xray_node_ids=ids, method="generative", checkpoint=str(checkpoints[0]), keep_temp=True,
        bundle_dir=str(_quick_inference_bundle(tmp_path)),
    )  # fmt: skip
    result = logic.GnerfReconstructionLogicCore(scene).run(params)
    try:
        assert_node_matches_nifti(slicer, result.volume_node, result.work_dir / "output" / "volume.nii.gz")
        assert result.views_node is not None
        stack = slicer.util.arrayFromVolume(result.views_node)
        assert stack.shape[0] == 72
        for node in (result.volume_node, result.views_node):  # the results sit in the X-ray's study
            assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
        (sequence,) = scene.GetNodesByClass("vtkMRMLSequenceNode")
        assert sequence.GetNumberOfDataNodes() == 72 and sequence.GetIndexUnit() == "deg"
        angles = [float(sequence.GetNthIndexValue(i)) for i in range(72)]
        assert angles[1] - angles[0] == pytest.approx(5.0) and len(set(angles)) == 72
        (browser,) = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
        proxy = browser.GetProxyNode(sequence)  # what the sequence toolbar shows: one view
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy)[0], stack[0])
    finally:
        import shutil

        shutil.rmtree(result.work_dir, ignore_errors=True)
