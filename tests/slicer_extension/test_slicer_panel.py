"""Tests of the module's panel (``GnerfReconstruction.py`` and ``Resources/UI/GnerfReconstruction.ui``).

Static checks (no Slicer at all): every widget the module code uses exists in the ``.ui`` panel,
every parameter maps to a widget the code can read, the combo boxes list the parameter choices.
With ``slicer-core`` (a real MRML scene, no Qt), the module's widget class itself, driven with small
test doubles for Qt: Apply turns into Cancel while the bundle runs, the result is shown, a process
error and an input problem reach the user as their message.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest
from GnerfReconstructionLib.parameters import (
    CHOICES,
    DEVICES,
    METHOD_LABELS,
    PARAMETER_WIDGETS,
    SOURCE_LABELS,
    ReconstructionParameters,
)
from slicer_testing import (
    MODULE_DIR,
    MODULE_FILE,
    MODULE_NAME,
    TINY_PIXEL_MM,
    UI_FILE,
    assert_node_matches_nifti,
    xray_nodes,
)


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
    ids = xray_nodes(slicer, panel.scene, drrs, TINY_PIXEL_MM)
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
        assert_node_matches_nifti(slicer, shown[0], work_dir / "output" / "reconstruction.nii.gz")
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
    ids = xray_nodes(slicer_module, panel.scene, tiny_drrs[0], TINY_PIXEL_MM)
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
