"""The planner: from the panel's choices to the bundle processes of a run and the files they write.

A run (:class:`~.job.ReconstructionJob`):

1. writes its inputs to a temporary folder (:mod:`.nodes`): X-ray volume nodes become a projection
   folder, a CT volume node a NIfTI file;
2. runs the MONAI bundle as ``<python> -m monai.bundle run --config_file ... --bundle_root ...``
   (``drr.json`` to simulate X-rays from the CT, then ``reconstruct.json`` or ``inference.json``),
   one process after the other;
3. loads the result (``reconstruction.nii.gz`` or ``volume.nii.gz``, and the simulated X-rays or
   rendered views) into new volume nodes.

The bundle's options are fields of config dataclass nodes and are overridden by field name under
their node (``drr#views``, ``fit#method``, ``sparse_view#spacing_mm``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from .geometry import base_geometry
from .install import default_bundle_dir, default_python
from .job import GnerfCancelled, GnerfProcessError, JobResult, LogCallback, ProgressCallback, ReconstructionJob, Step
from .nodes import (
    input_volume_node,
    load_views_nifti,
    load_volume_nifti,
    place_under_study,
    views_sequence,
    write_ct_nifti,
    write_projection_folder,
    xray_intake_file,
)
from .parameters import GnerfInputProblem, ReconstructionParameters, parameters_from_strings, parameters_to_strings

__all__ = [
    "GnerfReconstructionLogicCore",
    "bundle_command",
    "find_projection_folder",
    "xray_file",
]


def bundle_command(python: str, bundle_dir: Path, config: str, overrides: Mapping[str, Any]) -> list[str]:
    """``<python> -m monai.bundle run --config_file <bundle>/configs/<config> --bundle_root <bundle> --key value ...``.

    Args:
        python: the Python executable.
        bundle_dir: the bundle folder; also the config's ``bundle_root`` (where ``models/`` is found).
        config: config file name inside ``configs/``.
        overrides: config overrides by id (``"output_dir"``, ``"fit#method"``); ``None`` values are left out.
    """
    args = [python, "-m", "monai.bundle", "run", "--config_file", str(bundle_dir / "configs" / config)]
    args += ["--bundle_root", str(bundle_dir)]
    for key, value in overrides.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return args


@dataclass
class _Plan:
    """The processes of a run and where their result is.

    Attributes:
        steps: the bundle processes, in order.
        volume_path: the NIfTI volume the last step writes.
        volume_name: name of its node.
        views_path: the projection stack to show as well (or a function returning it once the steps
            ran); nothing is shown when it is ``None`` or was not written.
        views_name: name of its node.
        views_spacing: ``(row, col)`` pixel size of the views; default: the NIfTI's voxel size.
    """

    steps: list[Step]
    volume_path: Path
    volume_name: str
    views_path: Path | Callable[[], Path] | None = None
    views_name: str = ""
    views_spacing: tuple[float, float] | None = None
    source_node_id: str = ""

    def load(self, scene) -> tuple[Any, Any]:
        """New nodes in ``scene`` with what the steps wrote: the volume, and the views or ``None``.

        The views also become a Sequence node indexed by their angles (from the ``geometry.json``
        beside the stack) with a browser; all results go under the source node's study in the
        subject hierarchy.
        """
        volume = load_volume_nifti(scene, self.volume_path, self.volume_name)
        views, results = None, [volume]
        views_path = self.views_path() if callable(self.views_path) else self.views_path
        if views_path is not None and views_path.is_file():
            views = load_views_nifti(scene, views_path, self.views_name, self.views_spacing)
            results.append(views)
            geometry = views_path.parent / "geometry.json"
            if geometry.is_file():
                angles = json.loads(geometry.read_text())["angles_deg"]
                results.extend(views_sequence(scene, views, angles, f"{self.views_name} sequence"))
        source = scene.GetNodeByID(self.source_node_id) if self.source_node_id else None
        if source is not None:
            place_under_study(scene, results, source)
        return volume, views


_NODE_REFERENCE_ROLES = {"xray_node_ids": "xray", "ct_node_id": "ct"}
"""Parameter fields stored as node references of the parameter node, and their roles."""


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
        """Store the parameters in a scripted module node (``vtkMRMLScriptedModuleNode``).

        The selected nodes are node references (roles ``xray``, in view order, and ``ct``), as
        Slicer modules keep them: they survive saving and reloading the scene (where node IDs may
        change) and drop out when the node is deleted. The other choices are string parameters.
        """
        for name, text in parameters_to_strings(params).items():
            if name not in _NODE_REFERENCE_ROLES:
                node.SetParameter(name, text)
        node.RemoveNodeReferenceIDs(_NODE_REFERENCE_ROLES["xray_node_ids"])
        for node_id in params.xray_node_ids:
            node.AddNodeReferenceID(_NODE_REFERENCE_ROLES["xray_node_ids"], node_id)
        node.SetNodeReferenceID(_NODE_REFERENCE_ROLES["ct_node_id"], params.ct_node_id or None)

    @staticmethod
    def read_parameters(node) -> ReconstructionParameters:
        """Parameters stored by :meth:`write_parameters` (defaults for what is missing)."""
        strings = {name: node.GetParameter(name) for name in node.GetParameterNames() if name not in _NODE_REFERENCE_ROLES}
        role = _NODE_REFERENCE_ROLES["xray_node_ids"]
        xrays = [node.GetNthNodeReferenceID(role, i) for i in range(node.GetNumberOfNodeReferences(role))]
        return replace(parameters_from_strings(strings), xray_node_ids=tuple(x for x in xrays if x),
                       ct_node_id=node.GetNodeReferenceID(_NODE_REFERENCE_ROLES["ct_node_id"]) or "")  # fmt: skip

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
        load_result = partial(plan.load, self.scene)
        job = ReconstructionJob(plan.steps, load_result, work_dir, self.env, params.keep_temp, on_log, on_progress)
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
        if params.method == "generative" and params.checkpoint and not Path(params.checkpoint).is_file():
            raise GnerfInputProblem(f"the model checkpoint {params.checkpoint} is not a file.")
        if params.source == "ct":
            plan = self._plan_from_ct(params, bundle_dir, work_dir)
            plan.source_node_id = params.ct_node_id
        else:
            plan = self._plan_from_xrays(params, bundle_dir, work_dir)
            plan.source_node_id = params.xray_node_ids[0]
        return plan

    @staticmethod
    def _check_bundle(bundle_dir: Path, params: ReconstructionParameters) -> None:
        needed = ["inference.json" if params.method == "generative" else "reconstruct.json"]
        if params.source == "ct":
            needed.append("drr.json")
        missing = [name for name in needed if not (bundle_dir / "configs" / name).is_file()]
        if missing:
            raise GnerfInputProblem(f"the MONAI bundle {bundle_dir} has no configs/{', configs/'.join(missing)}.")

    def _plan_from_xrays(self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path) -> _Plan:
        nodes = [input_volume_node(self.scene, node_id, "X-ray volume") for node_id in params.xray_node_ids]
        if not nodes:
            raise GnerfInputProblem("select at least one X-ray volume.")
        if params.method == "generative" and len(nodes) != 1:
            raise GnerfInputProblem("the single-view generative method takes exactly one X-ray.")
        name = f"{nodes[0].GetName()} {params.method}"
        if params.method == "generative":
            xray = xray_intake_file(work_dir / "xray", nodes[0], params.values_are_intensities)
            return self._generative_plan(params, bundle_dir, work_dir, lambda: xray, [], name)
        projections = write_projection_folder(work_dir / "projections", nodes, params)
        return self._reconstruction_plan(params, bundle_dir, work_dir, projections, [], name)

    def _plan_from_ct(self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path) -> _Plan:
        ct = input_volume_node(self.scene, params.ct_node_id, "CT volume")
        ct_path = write_ct_nifti(work_dir / "ct.nii.gz", ct)
        geometry: str = params.geometry
        if params.custom_geometry:
            geometry = str(work_dir / "geometry.json")
            base_geometry(params).to_json(geometry)
        num_views = 1 if params.method == "generative" else int(params.num_views)
        simulated = work_dir / "simulated"
        drr_args = bundle_command(
            self.python, bundle_dir, "drr.json",
            {"dataset_dir": ct_path, "output_dir": simulated, "device": params.device,
             "drr#geometry": geometry, "drr#views": num_views},
        )  # fmt: skip
        drr = Step("simulate X-rays", drr_args, weight=0.2)
        name = f"{ct.GetName()} {params.method} {num_views} views"
        if params.method == "generative":

            def simulated_xray() -> Path:  # what drr.json will have written
                return xray_file(find_projection_folder(simulated))

            return self._generative_plan(params, bundle_dir, work_dir, simulated_xray, [drr], name)
        plan = self._reconstruction_plan(params, bundle_dir, work_dir, None, [drr], name)
        plan.views_path = lambda: find_projection_folder(simulated) / "projections.nii.gz"
        plan.views_name = f"{ct.GetName()} simulated X-rays"
        return plan

    def _generative_plan(
        self, params: ReconstructionParameters, bundle_dir: Path, work_dir: Path, xray, steps: list[Step], name: str
    ) -> _Plan:
        """Add the single-view step; ``xray()`` is the radiograph file the library's X-ray intake reads."""
        out = work_dir / "output"

        def inference_args() -> list[str]:
            return bundle_command(
                self.python, bundle_dir, "inference.json",
                {"xray": xray(), "output_dir": out, "device": params.device,
                 **({"checkpoint": params.checkpoint} if params.checkpoint else {})},  # empty: the bundle's model
            )  # fmt: skip

        steps.append(Step("single-view generative reconstruction", inference_args, weight=1.0))
        return _Plan(steps, out / "volume.nii.gz", name, out / "views" / "projections.nii.gz", f"{name} views")

    def _reconstruction_plan(
        self,
        params: ReconstructionParameters,
        bundle_dir: Path,
        work_dir: Path,
        projections: Path | None,
        steps: list[Step],
        name: str,
    ) -> _Plan:
        """Add the reconstruction step; ``projections=None`` means "what drr.json wrote"."""
        out = work_dir / "output"
        budget = float(params.budget_s) if params.budget_s > 0 and params.method != "fdk" else None

        def projections_dir() -> Path:
            return projections or find_projection_folder(work_dir / "simulated")

        def reconstruct_args() -> list[str]:
            return bundle_command(
                self.python, bundle_dir, "reconstruct.json",
                {"projections_dir": projections_dir(), "output_dir": out, "device": params.device,
                 "fit#method": params.method, "fit#budget_s": budget,
                 "sparse_view#spacing_mm": params.spacing_mm if params.spacing_mm > 0 else None},
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

    ``monai_gnerf.io.load_xray`` reads a PNG inside a projection folder back as exact line
    integrals with the folder's geometry (pixel spacing and distances).
    """
    return projections_dir / "png" / "view_000.png"
