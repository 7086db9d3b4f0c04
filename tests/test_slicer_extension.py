"""Tests of the 3D Slicer extension in ``slicer_extension/`` that need no Slicer application.

* Static checks (no Slicer at all): every widget the module code uses exists in the ``.ui`` panel,
  every parameter maps to a widget the code can read, the combo boxes list the parameter choices,
  the extension metadata is complete; the process runner's progress parsing, error messages and
  process-tree cancel.
* With the PyPI package ``slicer-core`` (a real MRML scene, no Qt): the module's logic takes X-ray
  volume nodes or a CT volume node from a real scene, runs tiny reconstructions through the MONAI
  bundle in ``bundle/`` as a separate process, and loads the NIfTI it wrote into a volume node with
  the same array and IJK-to-RAS matrix; cancel stops the process; a failing process reaches the
  user as its one-line message. These tests skip only when ``slicer-core`` is not installed.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "slicer_extension"
MODULE_NAME = "GnerfReconstruction"
MODULE_DIR = EXTENSION / MODULE_NAME
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE_NAME}.ui"
MODULE_FILE = MODULE_DIR / f"{MODULE_NAME}.py"
BUNDLE = ROOT / "bundle"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from GnerfReconstructionLib.parameters import (  # noqa: E402 - after the sys.path entry
    CHOICES,
    DEVICES,
    METHOD_LABELS,
    PARAMETER_WIDGETS,
    SOURCE_LABELS,
    GnerfInputProblem,
    ReconstructionParameters,
    parameters_from_strings,
    parameters_to_strings,
    parse_angles,
)
from GnerfReconstructionLib.process import ProcessRunner, error_message, is_progress_bar, parse_progress  # noqa: E402

TINY_VIEWS = 6
TINY_PIXELS = 32
TINY_PIXEL_MM = 18.75  # 32 pixels of 18.75 mm: the 600 mm detector of chest_cbct, coarsely


# ---------------------------------------------------------------------------------------- static: panel
def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _module_constants() -> dict[str, object]:
    """Module-level constants of the module file (read with ast: it imports Qt, which is absent here)."""
    tree = ast.parse(MODULE_FILE.read_text())
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return constants


def test_every_widget_the_module_uses_exists_in_the_ui_file():
    widgets = _ui_widgets()
    source = MODULE_FILE.read_text()
    used = set(_attribute_names(source))
    rows = {name for key, value in _module_constants().items() if key.endswith("_ROWS") for name in value}
    assert used, "the module uses no self.ui widgets?"
    assert not (used | rows) - set(widgets), f"missing in {UI_FILE.name}: {sorted((used | rows) - set(widgets))}"


def _attribute_names(source: str) -> list[str]:
    """Names used as ``self.ui.NAME`` in the module source."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.append(node.attr)
    return names


def test_every_parameter_maps_to_a_widget_the_module_can_read():
    widgets = _ui_widgets()
    signals = _module_constants()["_CHANGE_SIGNALS"]
    assert set(PARAMETER_WIDGETS) == {f.name for f in fields(ReconstructionParameters)}
    assert len(set(PARAMETER_WIDGETS.values())) == len(PARAMETER_WIDGETS), "two parameters share a widget"
    for name, widget_name in PARAMETER_WIDGETS.items():
        assert widget_name in widgets, f"parameter {name}: no widget {widget_name} in the .ui file"
        assert widgets[widget_name].get("class") in signals, f"{widget_name}: no change signal known for its class"


def test_combo_boxes_list_the_parameter_choices_in_order():
    widgets = _ui_widgets()
    labels = {"source": list(SOURCE_LABELS.values()), "method": list(METHOD_LABELS.values()), "device": list(DEVICES)}
    assert set(labels) == set(CHOICES)
    for name, expected in labels.items():
        combo = widgets[PARAMETER_WIDGETS[name]]
        items = [item.find("property/string").text for item in combo.findall("item")]
        assert items == expected, name
        assert len(CHOICES[name]) == len(items)


def test_mrml_widgets_receive_the_scene():
    root = ET.parse(UI_FILE).getroot()
    mrml = {w.get("name") for w in root.iter("widget") if w.get("class", "").startswith("qMRML") and w.get("name") != MODULE_NAME}
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal", "").startswith("mrmlSceneChanged")}
    assert mrml and mrml <= receivers
    assert root.find("widget").get("class") == "qMRMLWidget"


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


def test_extension_metadata():
    cmake = (EXTENSION / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in cmake, key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    assert f"add_subdirectory({MODULE_NAME})" in cmake
    module_cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in [*MODULE_DIR.glob(f"{MODULE_NAME}Lib/*.py"), UI_FILE, MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png"]:
        relative = path.relative_to(MODULE_DIR).as_posix().replace(MODULE_NAME, "${MODULE_NAME}")
        assert relative in module_cmake, f"{relative} is not listed in {MODULE_NAME}/CMakeLists.txt"
    catalog = json.loads((EXTENSION / "MonaiGnerf.json").read_text())
    assert catalog["build_dependencies"] == ["PyTorch"]
    assert catalog["build_subdirectory"] == "."  # the index builds the top-level CMakeLists of scm_url
    assert f'set(EXTENSION_CATEGORY "{catalog["category"]}")' in cmake
    requirements = (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
    assert [r for r in requirements if r and not r.startswith("#")] == ["monai-gnerf>=0.1.0"]
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png") as icon:
        assert icon.size == (128, 128)


# ---------------------------------------------------------------------------------------- static: process
def test_progress_parsing():
    assert parse_progress("Iteration: [20/1500]   1%|▏         , loss=0.00695 [00:02<02:57]") == pytest.approx(20 / 1500)
    assert parse_progress("DRR (joseph):  12%|█▎        | 1/8 [00:00<00:00,  7.94view/s]") == pytest.approx(1 / 8)
    assert parse_progress("04:25:57 INFO ignite.engine.engine.Engine: Engine run starting") is None
    assert is_progress_bar("DRR (joseph): 100%|██████████| 8/8 [00:00<00:00, 41.85view/s]")
    assert not is_progress_bar("04:26:00 INFO monai_gnerf.workflows: wrote out.nii.gz")


def test_error_message_is_the_one_line_user_error_or_the_exception():
    traceback_lines = ["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: bad thing"]
    assert error_message(["INFO start", "monai-gnerf: error: projection folder not found: /x"]) == (
        "projection folder not found: /x"
    )
    assert error_message(traceback_lines) == "ValueError: bad thing"
    assert error_message([], returncode=3) == "the process ended with status 3 without a message."


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('child started', flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = ProcessRunner([sys.executable, "-c", script]).start()
    deadline = time.monotonic() + 20
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(5) is not None
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the grandchild survived the cancel"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.is_file() and status.read_text().split()[2] == "Z")  # a zombie is dead


# ---------------------------------------------------------------------------------------- slicer-core
@pytest.fixture(scope="module")
def slicer_module():
    """The ``slicer`` package of slicer-core; skips the test when it is not installed."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core")
    return slicer


@pytest.fixture
def logic_module(slicer_module):
    from GnerfReconstructionLib import logic

    return logic


@pytest.fixture(scope="module")
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


def _xray_nodes(slicer, scene, images: np.ndarray, spacing_mm: float) -> tuple[str, ...]:
    ids = []
    for view, image in enumerate(images):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"X-ray {view}")
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(image[None]))
        node.SetSpacing(spacing_mm, spacing_mm, 1.0)
        ids.append(node.GetID())
    return tuple(ids)


def _ijk_to_ras(slicer, node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _assert_node_matches_nifti(slicer, node, path: Path) -> None:
    import nibabel as nib

    image = nib.load(str(path))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), np.asarray(image.dataobj).transpose(2, 1, 0))
    np.testing.assert_allclose(_ijk_to_ras(slicer, node), image.affine, atol=1e-5)


def test_ct_node_to_simulated_xrays_and_fdk_through_the_bundle(slicer_module, logic_module):
    from monai_gnerf.data import example_ct_path

    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ct = logic.load_volume_nifti(scene, example_ct_path(), "chest CT")
    params = ReconstructionParameters(source="ct", ct_node_id=ct.GetID(), num_views=3, method="fdk", spacing_mm=8.0, keep_temp=True)
    result = logic.GnerfReconstructionLogicCore(scene).run(params)
    try:
        _assert_node_matches_nifti(slicer, result.volume_node, result.work_dir / "output" / "reconstruction.nii.gz")
        ct_to_ras, out_to_ras = _ijk_to_ras(slicer, ct), _ijk_to_ras(slicer, result.volume_node)
        ct_extent = np.abs(ct_to_ras[:3, :3]).sum(axis=0) * np.array(ct.GetImageData().GetDimensions())
        out_extent = np.abs(out_to_ras[:3, :3]).sum(axis=0) * np.array(result.volume_node.GetImageData().GetDimensions())
        np.testing.assert_allclose(out_extent, ct_extent, rtol=0.1)  # the CT's field of view, on an 8 mm grid
        views = slicer.util.arrayFromVolume(result.views_node)
        stack = logic.find_projection_folder(result.work_dir / "simulated") / "projections.nii.gz"
        import nibabel as nib

        np.testing.assert_array_equal(views, np.asarray(nib.load(str(stack)).dataobj).transpose(2, 1, 0))
        assert views.shape == (3, 160, 160)  # chest_cbct's detector
        np.testing.assert_allclose(_ijk_to_ras(slicer, result.views_node), logic.views_ijk_to_ras((3.75, 3.75)))
    finally:
        import shutil

        shutil.rmtree(result.work_dir, ignore_errors=True)


def test_cancel_stops_the_bundle_process(slicer_module, logic_module, tiny_drrs):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ids = _xray_nodes(slicer, scene, tiny_drrs[0], TINY_PIXEL_MM)
    params = ReconstructionParameters(xray_node_ids=ids, method="grid", budget_s=600.0)
    job = logic.GnerfReconstructionLogicCore(scene).start(params)
    runner = job._runner
    assert job.running and runner is not None and runner.pid is not None
    time.sleep(1.0)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    assert job.state == "cancelled" and not job.poll()
    assert runner.poll() is not None  # the process ended
    assert not _alive(runner.pid)
    assert not job.work_dir.exists()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == TINY_VIEWS  # nothing was added


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
    small = _xray_nodes(slicer, scene, np.zeros((1, 8, 8), np.float32), 1.0)
    large = _xray_nodes(slicer, scene, np.zeros((1, 9, 8), np.float32), 1.0)
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


def test_intensities_become_line_integrals(slicer_module, logic_module, tiny_drrs):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    drrs = tiny_drrs[0][:2]
    ids = _xray_nodes(slicer, scene, (4000.0 * np.exp(-drrs)).astype(np.float32), 0.5)
    nodes = [scene.GetNodeByID(i) for i in ids]
    stack, spacing = logic.xray_images(nodes, values_are_intensities=True)
    i0_offset = -np.log(np.exp(-drrs).max(axis=(1, 2), keepdims=True))  # I0 is the brightest pixel
    np.testing.assert_allclose(stack, drrs - i0_offset, atol=1e-4)
    assert spacing == (0.5, 0.5)
    raw, _ = logic.xray_images(nodes[:1], values_are_intensities=False)
    np.testing.assert_allclose(raw[0], 4000.0 * np.exp(-drrs[0]), rtol=1e-6)


def test_single_xray_handed_to_the_generative_bundle_reads_back_exactly(slicer_module, logic_module, tiny_drrs, tmp_path):
    from monai_gnerf.xray import load_xray

    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ids = _xray_nodes(slicer, scene, tiny_drrs[0][:1], TINY_PIXEL_MM)
    params = ReconstructionParameters(xray_node_ids=ids, method="generative", view_angles="0")
    folder = logic.write_projection_folder(tmp_path / "projections", [scene.GetNodeByID(ids[0])], params)
    xray = load_xray(logic.xray_file(folder))  # what inference.json --xray reads
    assert xray.is_line_integral and xray.pixel_spacing_mm == (TINY_PIXEL_MM, TINY_PIXEL_MM)
    assert xray.source_to_detector_mm == 1500.0 and xray.source_to_isocenter_mm == 1000.0
    np.testing.assert_allclose(xray.values.numpy(), tiny_drrs[0][0], atol=tiny_drrs[0][0].max() / 65535)


def test_parameter_node_round_trip(slicer_module, logic_module):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "GnerfReconstruction")
    params = ReconstructionParameters(source="ct", ct_node_id="vtkMRMLScalarVolumeNode3", method="naf", budget_s=30.0)
    logic.GnerfReconstructionLogicCore.write_parameters(node, params)
    assert logic.GnerfReconstructionLogicCore.read_parameters(node) == params


def test_geometry_presets_and_dependencies(logic_module):
    from monai_gnerf.geometry import list_presets

    assert logic_module.geometry_presets() == list_presets()
    assert logic_module.dependency_requirements() == [str(ROOT)]  # a source checkout installs itself
    assert logic_module.default_bundle_dir() == BUNDLE


@pytest.mark.skipif(not (BUNDLE / "configs" / "inference.json").is_file(), reason="bundle has no inference.json yet")
def _quick_inference_bundle(tmp_path: Path) -> Path:
    """A copy of the bundle whose inference.json fits with a few iterations (seconds, not minutes)."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models"))
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config.update(restarts=1, latent_iterations=3, finetune_iterations=3, volume_size=16)
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def test_single_view_generative_through_the_bundle(slicer_module, logic_module, tiny_drrs, tmp_path):
    checkpoints = sorted((BUNDLE / "models").glob("*.pt"))
    if not checkpoints:
        pytest.skip("the bundle ships no model checkpoint")
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ids = _xray_nodes(slicer, scene, tiny_drrs[0][:1], TINY_PIXEL_MM)
    params = ReconstructionParameters(
        xray_node_ids=ids, method="generative", checkpoint=str(checkpoints[0]), keep_temp=True,
        bundle_dir=str(_quick_inference_bundle(tmp_path)),
    )  # fmt: skip
    result = logic.GnerfReconstructionLogicCore(scene).run(params)
    try:
        _assert_node_matches_nifti(slicer, result.volume_node, result.work_dir / "output" / "volume.nii.gz")
        assert result.views_node is not None
        assert slicer.util.arrayFromVolume(result.views_node).shape[0] == 72
    finally:
        import shutil

        shutil.rmtree(result.work_dir, ignore_errors=True)



def test_outside_slicer_the_bundle_runs_with_this_python(logic_module):
    assert logic_module.default_python() == sys.executable  # inside Slicer: PythonSlicer beside it


# ---------------------------------------------------------------------------------------- the panel, with test doubles
class _FakeWidget:
    """Stands in for a Qt widget of the .ui file: the properties and signals the module uses."""

    def __init__(self, cls: str, name: str) -> None:
        self._cls, self.objectName = cls, name
        self._slots: list = []
        self._blocked = False
        self.visible, self.enabled, self.toolTip, self.text = True, True, "", ""
        self.checked, self.value, self.currentPath, self.currentIndex = False, 0, "", 0
        self.items: list[str] = []
        self.lines: list[str] = []
        self.scene = None
        self.currentNodeID = ""
        self.checked_ids: list[str] = []

    def className(self) -> str:
        return self._cls

    def connect(self, signal: str, slot) -> None:
        self._slots.append(slot)

    def emit(self, *args) -> None:
        if not self._blocked:
            for slot in list(self._slots):
                slot(*args)

    def click(self) -> None:
        self.emit(False)

    def blockSignals(self, blocked: bool) -> bool:
        previous, self._blocked = self._blocked, blocked
        return previous

    def setVisible(self, visible: bool) -> None:
        self.visible = visible

    # QComboBox
    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    def addItems(self, items) -> None:
        self.items += list(items)

    def clear(self) -> None:
        self.items, self.lines = [], []

    def findText(self, text: str) -> int:
        return self.items.index(text) if text in self.items else -1

    # QPlainTextEdit
    def appendPlainText(self, line: str) -> None:
        self.lines.append(line)

    # qMRMLWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox
    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def setCurrentNodeID(self, node_id: str) -> None:
        self.currentNodeID = node_id

    def _volumes(self) -> list:
        return [self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode") for i in range(self.nodeCount())]

    def nodeCount(self) -> int:
        return self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    def nodeFromIndex(self, index: int):
        return self._volumes()[index]

    def setCheckState(self, node, state) -> None:
        if state == "checked" and node.GetID() not in self.checked_ids:
            self.checked_ids.append(node.GetID())
        elif state != "checked" and node.GetID() in self.checked_ids:
            self.checked_ids.remove(node.GetID())

    def checkedNodes(self) -> list:
        return [n for n in self._volumes() if n.GetID() in self.checked_ids]


class _FakeTimer:
    def __init__(self) -> None:
        self.active, self.slot = False, None

    def setInterval(self, ms: int) -> None:
        pass

    def connect(self, signal: str, slot) -> None:
        self.slot = slot

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


@pytest.fixture
def panel(slicer_module, monkeypatch):
    """The module's widget on a real scene, with test doubles for Qt, the .ui widgets and dialogs."""
    import types
    import unittest

    slicer = slicer_module
    scene = slicer.vtkMRMLScene()
    root = ET.parse(UI_FILE).getroot()
    ui = {w.get("name"): _FakeWidget(w.get("class"), w.get("name")) for w in root.iter("widget")}
    for name, widget in ui.items():  # combo box items of the .ui file
        widget.items = [i.findtext("property/string") for i in root.find(f".//widget[@name='{name}']").findall("item")]
    messages: list[tuple[str, dict]] = []

    qt = types.ModuleType("qt")
    qt.QTimer = _FakeTimer
    qt.Qt = types.SimpleNamespace(Checked="checked", Unchecked="unchecked")
    monkeypatch.setitem(sys.modules, "qt", qt)

    class Module:
        def __init__(self, parent) -> None:
            self.parent = parent

    class Widget:
        def __init__(self, parent=None) -> None:
            self.parent = types.SimpleNamespace(isEntered=True)
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def setup(self) -> None:
            pass

        def resourcePath(self, name: str) -> str:
            return str(MODULE_DIR / "Resources" / name)

    class Logic:
        def __init__(self, parent=None) -> None:
            super().__init__()  # as Slicer's ScriptedLoadableModuleLogic does: cooperative with mixins

        def getParameterNode(self):
            node = scene.GetFirstNodeByName(MODULE_NAME)
            return node or scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", MODULE_NAME)

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule, scripted.ScriptedLoadableModuleWidget = Module, Widget
    scripted.ScriptedLoadableModuleLogic, scripted.ScriptedLoadableModuleTest = Logic, unittest.TestCase
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    root_widget = ui[MODULE_NAME]
    receivers = [c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"]
    root_widget.setMRMLScene = lambda s: [ui[name].setMRMLScene(s) for name in receivers]  # the .ui connections
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: root_widget)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: types.SimpleNamespace(**ui))
    monkeypatch.setattr(slicer.util, "WaitCursor", lambda: __import__("contextlib").nullcontext())
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: messages.append((text, kw)))
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: messages.append(("shown", kw)))
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: dict(os.environ))
    monkeypatch.delitem(sys.modules, MODULE_NAME, raising=False)
    import importlib

    module = importlib.import_module(MODULE_NAME)
    widget = module.GnerfReconstructionWidget()
    widget.setup()
    yield types.SimpleNamespace(widget=widget, ui=ui, scene=scene, messages=messages, module=module)
    widget.cleanup()
    sys.modules.pop(MODULE_NAME, None)


def _run_timer(panel, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while panel.widget._timer.active:
        assert time.monotonic() < deadline, "the job did not end"
        panel.widget.onTimer()
        time.sleep(0.1)


def test_panel_xray_nodes_to_grid_through_the_bundle(panel, slicer_module, tiny_drrs):
    """The module's panel and logic on a real scene: X-ray volume nodes in, a 3-second grid field
    reconstructed by the bundle in a separate process, the output node equal to the NIfTI it wrote.
    Apply turns into Cancel while the process runs."""
    slicer, ui = slicer_module, panel.ui
    drrs, geometry = tiny_drrs
    ids = _xray_nodes(slicer, panel.scene, drrs, TINY_PIXEL_MM)
    assert ui["geometryComboBox"].items == __import__("monai_gnerf.geometry").geometry.list_presets()
    assert not ui["applyButton"].enabled  # nothing selected yet
    ui["xrayVolumesComboBox"].checked_ids = list(ids)
    ui["xrayVolumesComboBox"].emit()
    for name, value in (("budgetSpinBox", 3.0), ("spacingSpinBox", 8.0)):
        ui[name].value = value
        ui[name].emit(value)
    ui["keepTempCheckBox"].checked = True
    ui["keepTempCheckBox"].emit(True)
    stored = panel.widget.logic.parameters()
    assert stored.xray_node_ids == ids and stored.method == "grid" and stored.geometry == "chest_cbct"
    assert (stored.budget_s, stored.spacing_mm, stored.keep_temp) == (3.0, 8.0, True)
    assert ui["applyButton"].enabled and ui["budgetSpinBox"].visible and not ui["ctVolumeComboBox"].visible

    ui["applyButton"].click()
    assert ui["applyButton"].text == "Cancel"
    _run_timer(panel)
    assert ui["applyButton"].text == "Apply"
    assert ui["statusLabel"].text.startswith("Done") and ui["progressBar"].value == 1000
    assert any("monai.bundle" in line and "reconstruct.json" in line for line in ui["logTextEdit"].lines)
    shown = [kw["background"] for text, kw in panel.messages if text == "shown"]
    assert len(shown) == 1 and shown[0].GetName() == "X-ray 0 grid" and shown[0].GetScene() is panel.scene
    work_dir = Path(next(line for line in ui["logTextEdit"].lines if "temporary folder kept" in line).split(": ", 1)[1])
    try:
        _assert_node_matches_nifti(slicer, shown[0], work_dir / "output" / "reconstruction.nii.gz")
        volume = slicer.util.arrayFromVolume(shown[0])
        assert volume.shape == (50, 50, 50)  # 600 mm detector / 1.5 magnification / 8 mm
        assert volume.max() > 0  # soft tissue and bone in HU
        written = json.loads((work_dir / "projections" / "geometry.json").read_text())
        assert written["angles_deg"] == list(geometry.angles_deg)  # evenly over 360 degrees
        assert written["pixel_spacing_mm"] == [TINY_PIXEL_MM, TINY_PIXEL_MM]  # the nodes' spacing
        assert written["source_to_detector_mm"] == geometry.source_to_detector_mm
    finally:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)


def test_panel_cancel_and_error_message(panel, slicer_module, tiny_drrs):
    import torch

    ui = panel.ui
    ids = _xray_nodes(slicer_module, panel.scene, tiny_drrs[0], TINY_PIXEL_MM)
    ui["xrayVolumesComboBox"].checked_ids = list(ids)
    ui["xrayVolumesComboBox"].emit()
    ui["applyButton"].click()  # grid, 120 s budget
    assert ui["applyButton"].text == "Cancel"
    ui["applyButton"].click()
    assert ui["applyButton"].text == "Apply" and ui["statusLabel"].text == "Cancelled."
    assert not panel.widget._timer.active

    if torch.cuda.is_available():
        return
    ui["deviceComboBox"].currentIndex = CHOICES["device"].index("cuda")
    ui["deviceComboBox"].emit(1)
    ui["methodComboBox"].currentIndex = CHOICES["method"].index("fdk")
    ui["methodComboBox"].emit(3)
    ui["applyButton"].click()
    _run_timer(panel)
    errors = [(text, kw) for text, kw in panel.messages if text.startswith("Reconstruction failed")]
    assert len(errors) == 1
    message, details = errors[0][0], errors[0][1]["detailedText"]
    assert "cuda" in message and "\n" not in message and "Traceback" not in message and "monai-gnerf: error" not in message
    assert "monai.bundle" in details  # the log, with the command, goes to the details
    assert ui["statusLabel"].text == "Failed."


def test_panel_reports_input_problems_without_starting(panel):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # VTKObservationMixin warns on a double or missing observer
        panel.widget.exit()
        panel.widget.enter()
        panel.widget.enter()
    panel.ui["sourceComboBox"].currentIndex = CHOICES["source"].index("ct")
    panel.ui["sourceComboBox"].emit(1)
    assert panel.ui["ctVolumeComboBox"].visible and not panel.ui["xrayVolumesComboBox"].visible
    panel.widget.onApplyButton()
    assert panel.messages and "select a CT volume" in panel.messages[-1][0]
    assert panel.ui["applyButton"].text != "Cancel"
