"""Bundle-only code of the monai-gnerf MONAI bundle (imported by the configs as ``scripts``).

MONAI puts the bundle root on ``sys.path`` when a config's ``run`` starts; each config imports
this package then, through its key ``"scripts": "$importlib.import_module('scripts')"`` (an
``imports`` entry would be evaluated earlier when a config has an ``initialize`` section, as
``multi_gpu_train.json`` does, before the bundle root is on the path). It holds what only the
bundle needs:

* :func:`run_or_exit`: ``python -m monai.bundle run`` prints a full traceback for any exception;
  the configs call the jobs through this function, which turns a
  :class:`~monai_gnerf.errors.GnerfInputError` (a missing file, a bad geometry, an unknown
  device, a bad option, an existing output without ``overwrite``) into one line
  ``monai-gnerf: error: ...`` on stderr and exit status 2, as the CLI does. Any other exception is
  a bug and keeps its traceback. Called in-process (``monai.bundle.ConfigWorkflow``), the same
  error surfaces as ``SystemExit(2)`` after the line. The config dataclass nodes of the job
  configs are declared ``"_mode_": "callable"``, so MONAI hands over their constructors and this
  function builds them: the type and range checks of a bad override happen here.
* :class:`RunOutput`: the output folder of one run. ``reconstruct.json`` and ``inference.json``
  simulate their example input into ``output_dir`` before their job; they start with
  :meth:`RunOutput.start` and call every other step through its :meth:`~RunOutput.run_or_exit`,
  so a user error in a later step (a missing mask file, a missing VGG weights file) also removes
  the folder when this run made it.
* :func:`check_options`: a run step ``run_or_exit(@scripts.check_options, @node, ...)`` ahead of
  any work builds the job's config nodes, so a bad option is refused before anything is written
  (``reconstruct.json`` and ``inference.json`` simulate their example input first).
* :func:`report_errors_in_one_line`: ``train.json`` composes its components (networks, data,
  optimizers, trainer, handlers) in the config, so MONAI builds them before any job function
  runs and wraps their errors in its own. The first step of its ``run`` installs this hook: an
  uncaught exception caused by a :class:`~monai_gnerf.errors.GnerfInputError` ends
  ``python -m monai.bundle run`` with the same one line and exit status 2. In-process, the
  MONAI error propagates; :func:`user_error` finds the user error in it.
* :func:`check_training_inputs`, :func:`run_trainer`: ``train.json``'s checks before training
  (device, destinations) and its run (a finished run is not run again).
* :func:`simulate_dataset`: ``drr.json``'s job over a dataset of CTs.
* :func:`simulate_model_xray`: the default input of ``inference.json``, one simulated X-ray in
  the trained generator's own acquisition geometry.

Dataset layout used by ``drr.json`` and ``evaluate.json`` (:func:`monai_gnerf.data.ct_cases`): a
dataset is one CT (a NIfTI/NRRD/MHA file, a folder holding one DICOM series, or ``example``) or
a folder of CTs (CT files and/or one DICOM-series subfolder per CT). Each CT of a folder is a
*case* named after its file without suffix (``lung_01.nii.gz`` -> ``lung_01``) or its subfolder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from monai_gnerf.apps import DRRConfig, check_device, simulate_drrs
from monai_gnerf.engines import PriorTrainer
from monai_gnerf.config import Config, as_flag
from monai_gnerf.data import ct_cases, is_ct_collection
from monai_gnerf.errors import GnerfInputError, error_behind, report_interrupted
from monai_gnerf.io import check_output, removed_on_failure
from monai_gnerf.networks import load_generator

__all__ = [
    "SINGLE_CT_FOLDER",
    "RunOutput",
    "check_options",
    "check_training_inputs",
    "report_errors_in_one_line",
    "run_or_exit",
    "run_trainer",
    "simulate_dataset",
    "simulate_model_xray",
    "user_error",
]

T = TypeVar("T")
SINGLE_CT_FOLDER = "projections"
"""Name of the projection folder written for a dataset that is a single CT."""
_LOGGER = logging.getLogger("monai_gnerf.bundle")


def user_error(error: BaseException | None) -> BaseException | None:
    """The error a user can fix behind MONAI's wrappers: a :class:`~monai_gnerf.errors.GnerfInputError`,
    or MONAI's "Cannot locate class or function path" for a ``_target_`` (of a config or an
    override on the command line) that names nothing importable; ``None`` for anything else."""
    return error_behind(error, _fixable_by_the_user)


def _fixable_by_the_user(error: BaseException) -> bool:
    unknown_target = isinstance(error, ModuleNotFoundError) and str(error).startswith("Cannot locate class or function path")
    return isinstance(error, GnerfInputError) or unknown_target


def run_or_exit(job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``job(*args, **kwargs)``; a user error ends the program with one line.

    Raises:
        SystemExit: status 2, after printing ``"monai-gnerf: error: <reason>"`` on stderr, when
            the job raises :class:`~monai_gnerf.errors.GnerfInputError` (or an error caused by one).
    """
    try:
        return job(*[_built(a) for a in args], **{key: _built(value) for key, value in kwargs.items()})
    except Exception as err:
        found = user_error(err)  # also inside the wrappers of MONAI's transforms and engines
        if found is None:
            raise
        print(f"monai-gnerf: error: {found}", file=sys.stderr)
        raise SystemExit(2) from None


class RunOutput:
    """The output folder of a bundle run: removed when a step of the run ends in a user error and
    the run made the folder (one that existed when the run started is left as it is).

    A config calls :meth:`start` as its first step, before anything is written, then its other
    steps through :meth:`run_or_exit`::

        "output": "$@scripts.RunOutput(@output_dir)",
        "run": ["$@output.run_or_exit(@output.start)", "$@output.run_or_exit(job, ...)", ...]

    MONAI builds ``@output`` once per workflow; :meth:`start` records the folder's existence at
    every run, so a workflow run again in one process (whose second run may fail because the first
    one's output exists) never removes the first run's results. Only user errors remove the folder:
    after a Ctrl-C it stays (with any checkpoints a ``work_dir`` inside it holds) for a resumed run.

    Args:
        folder: the run's ``output_dir``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.made_by_this_run = False

    def start(self) -> None:
        """The run's first step: record whether the folder exists before the run writes."""
        self.made_by_this_run = not self.folder.exists()

    def run_or_exit(self, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:func:`run_or_exit`, removing the folder first when it ends the run."""
        try:
            return run_or_exit(job, *args, **kwargs)
        except SystemExit:
            if self.made_by_this_run:
                shutil.rmtree(self.folder, ignore_errors=True)
            raise


def check_options(*nodes: Any) -> tuple[Any, ...]:
    """The config nodes, built: called through :func:`run_or_exit`, which builds callable nodes
    (their type and range checks) before the call; nodes MONAI builds itself are checked when the
    step referencing them is resolved. Either way a bad option ends the run before any work."""
    return nodes


def report_errors_in_one_line() -> None:
    """From now on, an uncaught exception caused by a user error ends the program with one line and
    status 2, and a Ctrl-C with one line and status 130.

    Other exceptions keep Python's traceback (they are bugs). Installing it twice is harmless.
    """
    previous = sys.excepthook
    if getattr(previous, "reports_user_errors", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):  # Ctrl-C: one line, and Python still exits with 130
            report_interrupted()
            return
        found = user_error(error)
        if found is None:
            previous(kind, error, traceback)
            return
        print(f"monai-gnerf: error: {found}", file=sys.stderr)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)  # an excepthook cannot choose the exit status otherwise

    hook.reports_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def check_training_inputs(
    data_loader: Any, output_dir: str | Path, tensorboard_dir: str | Path | None, device: str | torch.device
) -> None:
    """``train.json``'s checks before anything is written: the data (built by now), the device and
    the destinations (a run in ``output_dir`` resumes, so it may exist)."""
    check_device(device)
    check_output(output_dir, "dir", overwrite=True)
    if tensorboard_dir is not None:
        check_output(tensorboard_dir, "dir", overwrite=True, option="tensorboard_dir")
    _LOGGER.info(f"training on {len(data_loader.dataset)} views in batches of {data_loader.batch_size}")


def run_trainer(trainer: PriorTrainer) -> PriorTrainer:
    """Run a trainer to its iteration budget (a finished, resumed run is not run again)."""
    if trainer.state.iteration < trainer.state.max_epochs * trainer.state.epoch_length:
        trainer.run()
    return trainer


def _built(value: Any) -> Any:
    """A config node given as its constructor (``"_mode_": "callable"``), built with its nested nodes."""
    if isinstance(value, type) and issubclass(value, Config):  # a node without fields: MONAI passes the class
        return value()
    if isinstance(value, functools.partial) and isinstance(value.func, type) and issubclass(value.func, Config):
        return value.func(*[_built(a) for a in value.args], **{k: _built(v) for k, v in value.keywords.items()})
    return value


def simulate_dataset(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: DRRConfig | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Simulate a projection folder per CT of a dataset (see :func:`~monai_gnerf.apps.simulate_drrs`).

    A single CT (file, DICOM series folder or ``example``) goes to ``output_dir/projections/``;
    each CT of a folder of CTs goes to ``output_dir/<case name>/``. ``overwrite`` replaces the
    projections of an earlier run. When a case fails (or on Ctrl-C), the folders this run created
    for earlier cases are removed: nothing partial is left.

    Returns:
        The projection folders written, in case order.
    """
    device = check_device(device)
    overwrite = as_flag("overwrite", overwrite)
    single = not is_ct_collection(dataset_dir)
    written = []
    with contextlib.ExitStack() as cases:  # a failing case unwinds every case's folder made so far
        for name, path in ct_cases(dataset_dir):
            out = cases.enter_context(removed_on_failure(Path(output_dir) / (SINGLE_CT_FOLDER if single else name)))
            _LOGGER.info(f"simulating {path} -> {out}")
            written.append(simulate_drrs(path, out, config, device, overwrite))
    return written


def simulate_model_xray(
    checkpoint: str | Path,
    output_dir: str | Path,
    ct: str | Path = "example",
    angle_deg: float = 0.0,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> Path:
    """Simulate one X-ray of a CT in the acquisition geometry of a generator file.

    The geometry is the generator's training geometry (detector size and pitch, distances) with
    one view at ``angle_deg`` (0 = posterior-anterior) and the isocenter at the CT's centre. The
    view is written as a projection folder, whose PNG :func:`~monai_gnerf.io.load_xray` reads back
    as line integrals.

    Args:
        checkpoint: generator file (``generator.pt`` of ``train.json``, ``models/model.pt``).
        output_dir: projection folder to write.
        ct: CT in HU (file, DICOM series folder, or ``example``).
        angle_deg: orbit angle of the view, degrees.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: replace the view of an earlier run.

    Returns:
        The view's PNG, ``output_dir/png/view_000.png``.

    Raises:
        GnerfInputError: missing or incompatible generator file, missing CT, unknown device.
    """
    _, geometry, _ = load_generator(checkpoint)
    geometry = replace(geometry, isocenter_mm=None).with_uniform_angles(1, start_deg=angle_deg)
    _LOGGER.info(f"simulating one {geometry.detector_shape} view of {ct} at {angle_deg} deg -> {output_dir}")
    folder = simulate_drrs(ct, output_dir, DRRConfig(geometry=geometry), device, overwrite)
    return folder / "png" / "view_000.png"
