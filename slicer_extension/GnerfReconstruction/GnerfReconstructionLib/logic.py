"""The module's logic, free of Qt: MRML nodes in, the MONAI bundle in a separate process, MRML nodes out.

It runs inside the Slicer application and, for tests, on a plain ``slicer.vtkMRMLScene`` from the
PyPI package ``slicer-core``. A run:

1. writes its inputs to a temporary folder with the public ``monai_gnerf`` API: X-ray volume nodes
   become a projection folder (line integrals plus ``geometry.json``); a CT volume node becomes a
   NIfTI file in HU (its IJK-to-RAS matrix as the affine);
2. runs the MONAI bundle as ``<python> -m monai.bundle run --config_file ...`` (``drr.json`` to
   simulate X-rays from the CT, then ``reconstruct.json`` or ``inference.json``), one process after
   the other, streaming their output and parsing their progress bars;
3. loads the result (``reconstruction.nii.gz`` or ``volume.nii.gz``) into a new scalar volume node
   whose IJK-to-RAS matrix is the NIfTI affine, and projection stacks (simulated X-rays, rendered
   views) into a volume laid out for browsing in the coronal slice view.

A failing process is reported by :class:`GnerfProcessError` carrying the process's own one-line
message (``monai-gnerf: error: ...``), not a traceback. :meth:`ReconstructionJob.cancel` ends the
whole process tree.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from .parameters import (
    GnerfInputProblem,
    ReconstructionParameters,
    parameters_from_strings,
    parameters_to_strings,
    parse_angles,
)
from .process import ProcessRunner, error_message, is_progress_bar, parse_progress

__all__ = [
    "GnerfCancelled",
    "GnerfInputProblem",
    "GnerfProcessError",
    "GnerfReconstructionLogicCore",
    "JobResult",
    "ReconstructionJob",
    "bundle_command",
    "default_bundle_dir",
    "default_python",
    "dependency_requirements",
    "geometry_presets",
    "parse_angles",
    "views_ijk_to_ras",
]

_LOGGER = logging.getLogger("GnerfReconstruction")
MODULE_DIR = Path(__file__).resolve().parents[1]
_INTENSITY_FLOOR = 1e-6  # smallest I/I0 before the logarithm (about 14 in line-integral units)

LogCallback = Callable[[str], None]
ProgressCallback = Callable[[float, str], None]


class GnerfProcessError(RuntimeError):
    """The bundle process failed; ``str(err)`` is the process's own message."""

    def __init__(self, message: str, log_lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log_lines = list(log_lines)


class GnerfCancelled(RuntimeError):
    """The user cancelled the run."""


# ---------------------------------------------------------------------------------------- locations
def default_bundle_dir() -> Path:
    """The MONAI bundle used when the panel names none.

    The bundle installed with the module (``Resources/bundle``, copied there by the extension's
    build) or, in a source checkout, the repository's ``bundle`` folder beside ``slicer_extension``.
    """
    candidates = [MODULE_DIR / "Resources" / "bundle", MODULE_DIR.parents[1] / "bundle"]
    for candidate in candidates:
        if (candidate / "configs").is_dir():
            return candidate
    return candidates[-1]


def default_python() -> str:
    """The Python that runs the bundle: Slicer's ``PythonSlicer`` launcher when there is one, else this one."""
    name = "PythonSlicer.exe" if sys.platform.startswith("win") else "PythonSlicer"
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    return shutil.which("PythonSlicer") or sys.executable


def bundle_command(python: str, bundle_dir: Path, config: str, **overrides: Any) -> list[str]:
    """``<python> -m monai.bundle run --config_file <bundle>/configs/<config> --key value ...``.

    Args:
        python: the Python executable.
        bundle_dir: the bundle folder.
        config: config file name inside ``configs/``.
        overrides: config overrides; ``None`` values are left out.
    """
    args = [python, "-m", "monai.bundle", "run", "--config_file", str(bundle_dir / "configs" / config)]
    for key, value in overrides.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return args


def geometry_presets() -> list[str]:
    """Geometry preset names: the installed monai-gnerf's, else the JSON files of the source checkout."""
    try:
        from monai_gnerf.geometry import list_presets
    except ImportError:
        folder = MODULE_DIR.parents[1] / "configs" / "geometry"
        names = sorted(p.stem for p in folder.glob("*.json"))
        return names or ["chest_cbct"]
    return list_presets()


def dependency_requirements() -> list[str]:
    """What "Install dependencies" passes to pip: this source checkout when the module runs from one,
    else the lines of ``Resources/requirements.txt``."""
    root = MODULE_DIR.parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "monai-gnerf"' in pyproject.read_text(encoding="utf-8"):
        return [str(root)]
    lines = (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------- geometry
def _preset(params: ReconstructionParameters):
    from monai_gnerf.errors import GnerfInputError
    from monai_gnerf.geometry import load_geometry

    try:
        return load_geometry(params.geometry)
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None


def _with_custom_distances(geometry, params: ReconstructionParameters):
    if not params.custom_geometry:
        return geometry
    from monai_gnerf.errors import GnerfInputError

    try:
        return replace(
            geometry,
            beam="cone",
            source_to_isocenter_mm=float(params.source_to_isocenter_mm),
            source_to_detector_mm=float(params.source_to_detector_mm),
            name=f"{geometry.name or 'custom'}-custom",
        )
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None


def xray_geometry(
    params: ReconstructionParameters, detector_shape: tuple[int, int], node_spacing_mm: tuple[float, float]
):
    """The ``ProjectionGeometry`` of X-ray nodes: preset (or custom) distances, the nodes' pixels.

    The detector has the nodes' pixel count; its pixel size is the nodes' spacing
    (``use_node_spacing``) or the preset's detector size spread over those pixels. The isocenter is
    the RAS origin, the orbit axis superior, view 0 posterior-anterior.

    Args:
        params: the panel's choices.
        detector_shape: ``(rows, cols)`` of the X-ray images.
        node_spacing_mm: ``(row, col)`` pixel spacing of the nodes, mm.
    """
    from monai_gnerf.errors import GnerfInputError

    base = _with_custom_distances(_preset(params), params)
    num_views = len(params.xray_node_ids)
    if params.use_node_spacing:
        spacing = tuple(float(s) for s in node_spacing_mm)
    else:
        extent = [n * s for n, s in zip(base.detector_shape, base.pixel_spacing_mm)]
        spacing = tuple(e / n for e, n in zip(extent, detector_shape))
    angles = parse_angles(params.view_angles, num_views, base.angles_deg)
    try:
        return replace(
            base,
            angles_deg=tuple(angles),
            tilt_deg=None,
            detector_shape=tuple(detector_shape),
            pixel_spacing_mm=spacing,
            isocenter_mm=(0.0, 0.0, 0.0),
            name=f"{base.name or 'geometry'}-slicer",
            description=f"X-ray volume nodes from 3D Slicer on the {base.name or 'custom'} geometry.",
        )
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None


# ---------------------------------------------------------------------------------------- nodes <-> files
def _node(scene, node_id: str, what: str):
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

    from monai_gnerf.projections import save_projections

    stack, spacing = xray_images(nodes, params.values_are_intensities)
    geometry = xray_geometry(params, stack.shape[1:], spacing)
    extra = {"source": "3D Slicer X-ray volume nodes", "nodes": [n.GetName() for n in nodes]}
    return save_projections(folder, torch.from_numpy(stack), geometry, extra)


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


# ---------------------------------------------------------------------------------------- runs
@dataclass
class Step:
    """One bundle process of a run.

    Attributes:
        name: what the step does, shown in the status line.
        args: the command, or a function returning it when the step starts (when it depends on
            what an earlier step wrote).
        weight: its share of the progress bar.
        budget_s: wall-time budget; once the step reports its first iteration, progress also advances
            with the elapsed time over the budget.
    """

    name: str
    args: list[str] | Callable[[], list[str]]
    weight: float = 1.0
    budget_s: float | None = None


@dataclass
class JobResult:
    """What a finished run added to the scene.

    Attributes:
        volume_node: the reconstructed volume (HU).
        views_node: simulated X-rays or rendered views as a projection stack, if any.
        work_dir: the temporary folder (deleted unless kept).
        seconds: wall time of the run.
    """

    volume_node: Any
    views_node: Any = None
    work_dir: Path | None = None
    seconds: float = 0.0


@dataclass
class _Plan:
    steps: list[Step]
    volume_path: Path
    volume_name: str
    views_path: Path | Callable[[], Path] | None = None
    views_name: str = ""
    views_spacing: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)


class ReconstructionJob:
    """A run in progress: its bundle processes, one after the other, then the loading of the result.

    Call :meth:`poll` regularly (the panel uses a timer; :meth:`GnerfReconstructionLogicCore.run`
    a loop): it starts the next process, forwards output lines and progress to the callbacks and,
    at the end, loads the result. ``state`` is ``running``, ``done``, ``failed`` or ``cancelled``.
    """

    def __init__(
        self,
        scene,
        plan: _Plan,
        work_dir: Path,
        env: dict[str, str] | None,
        keep_temp: bool,
        on_log: LogCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.scene = scene
        self.plan = plan
        self.work_dir = work_dir
        self.env = env
        self.keep_temp = keep_temp
        self.on_log = on_log or (lambda line: None)
        self.on_progress = on_progress or (lambda fraction, text: None)
        self.state = "running"
        self.error = ""
        self.result: JobResult | None = None
        self.log_lines: list[str] = []
        self._index = -1
        self._runner: ProcessRunner | None = None
        self._clock: float | None = None  # when the current step reported its first progress
        self._step_fraction = 0.0
        self._shown: tuple[float, str] = (-1.0, "")
        self._started = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the job still runs."""
        return self.state == "running"

    @property
    def progress(self) -> float:
        """Completed fraction of the whole run."""
        steps = self.plan.steps
        total = sum(s.weight for s in steps) or 1.0
        done = sum(s.weight for s in steps[: max(self._index, 0)])
        current = steps[self._index].weight * self._step_fraction if 0 <= self._index < len(steps) else 0.0
        return min(1.0, (done + current) / total)

    def poll(self) -> bool:
        """Advance the job; returns whether it is still running."""
        if not self.running:
            return False
        if self._runner is None:
            self._start_next()
            return self.running
        self._forward_output()
        status = self._runner.poll()
        if status is None:
            self._update_time_progress()
            return True
        self._forward_output()
        if status != 0:
            self._fail(error_message(self._runner.stderr_lines or self.log_lines, status))
            return False
        self._runner = None
        self._start_next()
        return self.running

    def cancel(self) -> None:
        """Stop the running process and all its children; the job ends as ``cancelled``."""
        if not self.running:
            return
        if self._runner is not None:
            self._runner.cancel()
        self.state = "cancelled"
        self._log("cancelled by the user.")
        self._cleanup()

    # ------------------------------------------------------------------ internals
    def _start_next(self) -> None:
        self._index += 1
        if self._index >= len(self.plan.steps):
            self._finish()
            return
        step = self.plan.steps[self._index]
        self._step_fraction = 0.0
        self._clock = None
        try:
            args = step.args() if callable(step.args) else step.args
        except GnerfProcessError as err:
            self._fail(str(err))
            return
        self._log(f"[{step.name}] {' '.join(args)}")
        self._show_progress(step.name)
        try:
            self._runner = ProcessRunner(args, env=self.env, log_path=self.work_dir / "log.txt").start()
        except OSError as err:
            self._fail(f"cannot start {step.args[0]}: {err.strerror or err}")

    def _forward_output(self) -> None:
        step = self.plan.steps[self._index]
        for _, line in self._runner.read_lines():  # type: ignore[union-attr]
            fraction = parse_progress(line)
            if fraction is not None:
                self._clock = self._clock or time.monotonic()
                self._step_fraction = max(self._step_fraction, min(fraction, 0.99))
            if is_progress_bar(line):
                self._show_progress(f"{step.name}: {line.strip()[:100]}")
            else:
                self._log(line)

    def _update_time_progress(self) -> None:
        step = self.plan.steps[self._index]
        if step.budget_s and self._clock is not None:
            elapsed = time.monotonic() - self._clock
            self._step_fraction = max(self._step_fraction, min(elapsed / step.budget_s, 0.99))
        self._show_progress(self._shown[1] or step.name)

    def _show_progress(self, text: str) -> None:
        """Report progress when it changed visibly (progress bars redraw many times a second)."""
        shown = (round(self.progress, 3), text)
        if shown != self._shown:
            self._shown = shown
            self.on_progress(*shown)

    def _finish(self) -> None:
        try:
            volume = load_volume_nifti(self.scene, self.plan.volume_path, self.plan.volume_name)
            views = None
            views_path = self.plan.views_path() if callable(self.plan.views_path) else self.plan.views_path
            if views_path is not None and views_path.is_file():
                views = load_views_nifti(self.scene, views_path, self.plan.views_name, self.plan.views_spacing)
        except (OSError, GnerfProcessError) as err:
            self._fail(f"the bundle ran but its output could not be loaded: {err}")
            return
        self.result = JobResult(volume, views, self.work_dir, time.monotonic() - self._started)
        self.state = "done"
        self._log(f"done in {self.result.seconds:.0f} s: {volume.GetName()}")
        self._show_progress("done")
        self._cleanup()

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self._log(f"error: {message}")
        self._cleanup()

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        self.on_log(line)

    def _cleanup(self) -> None:
        if self.keep_temp:
            self._log(f"temporary folder kept: {self.work_dir}")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


class GnerfReconstructionLogicCore:
    """Runs reconstructions for a MRML scene (no Qt; the module's Logic class builds on it).

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer, a ``slicer.vtkMRMLScene`` in tests);
            optional because Slicer's ``ScriptedLoadableModuleLogic`` calls ``super().__init__()``
            without arguments: the module's logic sets it afterwards.
        python: Python executable that runs the bundle (default: :func:`default_python`).
        env: environment of the bundle processes (default: this process's).
    """

    def __init__(self, scene=None, python: str | None = None, env: dict[str, str] | None = None) -> None:
        self.scene = scene
        self.python = python or default_python()
        self.env = env

    # ------------------------------------------------------------------ parameter node
    @staticmethod
    def write_parameters(node, params: ReconstructionParameters) -> None:
        """Store the parameters in a scripted module node (``vtkMRMLScriptedModuleNode``)."""
        for name, text in parameters_to_strings(params).items():
            node.SetParameter(name, text)

    @staticmethod
    def read_parameters(node) -> ReconstructionParameters:
        """Parameters stored by :meth:`write_parameters` (defaults for what is missing)."""
        return parameters_from_strings({name: node.GetParameter(name) for name in node.GetParameterNames()})

    # ------------------------------------------------------------------ runs
    def start(
        self,
        params: ReconstructionParameters,
        on_log: LogCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ReconstructionJob:
        """Write the inputs and start the run; poll the returned job until it ends.

        Raises:
            GnerfInputProblem: the choices cannot be run; the message says why.
        """
        bundle_dir = Path(params.bundle_dir) if params.bundle_dir else default_bundle_dir()
        work_dir = Path(tempfile.mkdtemp(prefix="gnerf-slicer-"))
        try:
            plan = self._plan(params, bundle_dir, work_dir)
        except Exception:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        (work_dir / "parameters.json").write_text(json.dumps(parameters_to_strings(params), indent=2) + "\n")
        job = ReconstructionJob(self.scene, plan, work_dir, self.env, params.keep_temp, on_log, on_progress)
        job.poll()
        return job

    def run(
        self,
        params: ReconstructionParameters,
        on_log: LogCallback | None = None,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 0.1,
    ) -> JobResult:
        """Run to the end (blocking): the result, or :class:`GnerfProcessError` with the process's message."""
        job = self.start(params, on_log, on_progress)
        while job.poll():
            time.sleep(poll_s)
        if job.state == "failed":
            raise GnerfProcessError(job.error, job.log_lines)
        if job.state == "cancelled":
            raise GnerfCancelled("cancelled")
        return job.result  # type: ignore[return-value]

    # ------------------------------------------------------------------ plans
    def _plan(self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path) -> _Plan:
        self._check_bundle(bundle_dir, params)
        if params.method == "generative" and not Path(params.checkpoint).is_file():
            raise GnerfInputProblem("the single-view generative method needs a model checkpoint file.")
        if params.source == "ct":
            return self._plan_from_ct(params, bundle_dir, work_dir)
        return self._plan_from_xrays(params, bundle_dir, work_dir)

    @staticmethod
    def _check_bundle(bundle_dir: Path, params: ReconstructionParameters) -> None:
        needed = ["inference.json" if params.method == "generative" else "reconstruct.json"]
        if params.source == "ct":
            needed.append("drr.json")
        missing = [name for name in needed if not (bundle_dir / "configs" / name).is_file()]
        if missing:
            raise GnerfInputProblem(f"the MONAI bundle {bundle_dir} has no configs/{', configs/'.join(missing)}.")

    def _plan_from_xrays(self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path) -> _Plan:
        nodes = [_node(self.scene, node_id, "X-ray volume") for node_id in params.xray_node_ids]
        if not nodes:
            raise GnerfInputProblem("select at least one X-ray volume.")
        if params.method == "generative" and len(nodes) != 1:
            raise GnerfInputProblem("the single-view generative method takes exactly one X-ray.")
        projections = write_projection_folder(work_dir / "projections", nodes, params)
        name = f"{nodes[0].GetName()} {params.method}"
        return self._reconstruction_plan(params, bundle_dir, work_dir, projections, [], name)

    def _plan_from_ct(self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path) -> _Plan:
        ct = _node(self.scene, params.ct_node_id, "CT volume")
        ct_path = write_ct_nifti(work_dir / "ct.nii.gz", ct)
        geometry: str = params.geometry
        if params.custom_geometry:
            geometry = str(work_dir / "geometry.json")
            _with_custom_distances(_preset(params), params).to_json(geometry)
        num_views = 1 if params.method == "generative" else int(params.num_views)
        simulated = work_dir / "simulated"
        drr_args = bundle_command(
            self.python, bundle_dir, "drr.json",
            dataset_dir=ct_path, output_dir=simulated, geometry=geometry, num_views=num_views, device=params.device,
        )  # fmt: skip
        drr = Step("simulate X-rays", drr_args, weight=0.2)
        name = f"{ct.GetName()} {params.method} {num_views} views"
        plan = self._reconstruction_plan(params, bundle_dir, work_dir, None, [drr], name)
        if params.method != "generative":
            plan.views_path = lambda: find_projection_folder(simulated) / "projections.nii.gz"
            plan.views_name = f"{ct.GetName()} simulated X-rays"
        return plan

    def _reconstruction_plan(
        self,
        params: ReconstructionParameters,
        bundle_dir: Path,
        work_dir: Path,
        projections: Path | None,
        steps: list[Step],
        name: str,
    ) -> _Plan:
        """Add the reconstruction (or generative) step; ``projections=None`` means "what drr.json wrote"."""
        out = work_dir / "output"
        budget = float(params.budget_s) if params.budget_s > 0 and params.method != "fdk" else None

        def projections_dir() -> Path:
            return projections or find_projection_folder(work_dir / "simulated")

        if params.method == "generative":

            def inference_args() -> list[str]:
                return bundle_command(
                    self.python, bundle_dir, "inference.json",
                    xray=xray_file(projections_dir()), checkpoint=params.checkpoint, output_dir=out, device=params.device,
                )  # fmt: skip

            steps.append(Step("single-view generative reconstruction", inference_args, weight=1.0))
            return _Plan(steps, out / "volume.nii.gz", name, out / "views" / "projections.nii.gz", f"{name} views")

        def reconstruct_args() -> list[str]:
            return bundle_command(
                self.python, bundle_dir, "reconstruct.json",
                projections_dir=projections_dir(), output_dir=out, method=params.method, budget_s=budget,
                device=params.device, spacing_mm=params.spacing_mm if params.spacing_mm > 0 else None,
            )  # fmt: skip

        steps.append(Step("reconstruct", reconstruct_args, weight=1.0, budget_s=budget))
        return _Plan(steps, out / "reconstruction.nii.gz", name)


def find_projection_folder(output_dir: Path) -> Path:
    """The projection folder ``drr.json`` wrote: ``output_dir`` itself or the folder below it holding ``geometry.json``."""
    if (output_dir / "geometry.json").is_file():
        return output_dir
    found = sorted(p.parent for p in output_dir.rglob("geometry.json"))
    if not found:
        raise GnerfProcessError(f"the X-ray simulation wrote no projection folder (geometry.json) under {output_dir}.")
    return found[0]


def xray_file(projections_dir: Path) -> Path:
    """The single X-ray of a one-view projection folder, as passed to ``inference.json --xray``.

    ``monai_gnerf.xray.load_xray`` reads a PNG inside a projection folder back as exact line
    integrals with the folder's geometry (pixel spacing and distances).
    """
    return projections_dir / "png" / "view_000.png"
