"""Support for the MONAI bundle in ``bundle/``: one-line errors and dataset folders.

``python -m monai.bundle run`` prints a full traceback for any exception. The bundle's configs
therefore call monai-gnerf workflows through :func:`run_or_exit`, which turns a
:class:`~monai_gnerf.errors.GnerfInputError` (a missing file, a bad geometry, an unknown device)
into ``SystemExit("monai-gnerf: error: ...")``: Python prints that one line on stderr and the
process exits with status 1. Any other exception is a bug and keeps its traceback. In a config::

    "reconstruct": {"_target_": "monai_gnerf.workflows.reconstruct_folder", "_mode_": "callable", ...},
    "run": ["$monai_gnerf.bundle_support.run_or_exit(@reconstruct)"]

Called in-process (``monai.bundle.ConfigWorkflow``), the same error surfaces as a ``SystemExit``
whose ``code`` is the message.

The generative prior's configs use :func:`bundle_root` (where ``models/model.pt`` lives) and
:func:`simulate_model_xray` (the default input of ``inference.json``: one simulated X-ray in the
trained generator's own acquisition geometry).

Dataset layout used by ``drr.json`` and ``evaluate.json`` (:func:`monai_gnerf.datasets.ct_cases`): a dataset is one
CT (a NIfTI/NRRD/MHA file, a folder holding one DICOM series, or ``example``) or a folder of
CTs (CT files and/or one DICOM-series subfolder per CT). Each CT of a folder is a *case* named
after its file without suffix (``lung_01.nii.gz`` -> ``lung_01``) or its subfolder.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.prior import load_generator
from monai_gnerf.rendering import RenderMethod
from monai_gnerf.datasets import ct_cases, is_ct_collection
from monai_gnerf.workflows import simulate_drrs

__all__ = [
    "REPOSITORY_BUNDLE",
    "SINGLE_CT_FOLDER",
    "bundle_root",
    "check_device",
    "run_or_exit",
    "simulate_dataset",
    "simulate_model_xray",
]

T = TypeVar("T")
SINGLE_CT_FOLDER = "projections"
"""Name of the projection folder written for a dataset that is a single CT."""
REPOSITORY_BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
"""The bundle folder of the repository this package was installed from (editable install)."""
_LOGGER = logging.getLogger("monai_gnerf.bundle_support")


def run_or_exit(workflow: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``workflow(*args, **kwargs)``; a user error ends the program with one line.

    Raises:
        SystemExit: with the message ``"monai-gnerf: error: <reason>"`` when the workflow raises
            :class:`~monai_gnerf.errors.GnerfInputError`.
    """
    try:
        return workflow(*args, **kwargs)
    except GnerfInputError as err:
        raise SystemExit(f"monai-gnerf: error: {err}") from None


def check_device(name: str | torch.device) -> torch.device:
    """The torch device called ``name``, or a :class:`GnerfInputError` if it is unknown or absent."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise GnerfInputError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GnerfInputError(f"device {name!r} was requested but no CUDA GPU is available; use cpu.")
    return device


def simulate_dataset(
    dataset_dir: str | Path,
    output_dir: str | Path,
    geometry: str | Path = "chest_cbct",
    num_views: int | None = None,
    method: RenderMethod = "joseph",
    step_mm: float | None = None,
    mu_water_per_mm: float = MU_WATER_PER_MM,
    noise_i0: float | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[Path]:
    """Simulate a projection folder per CT of a dataset (see :func:`~monai_gnerf.workflows.simulate_drrs`).

    A single CT (file, DICOM series folder or ``example``) goes to ``output_dir/projections/``;
    each CT of a folder of CTs goes to ``output_dir/<case name>/``.

    Returns:
        The projection folders written, in case order.
    """
    device = check_device(device)
    cases = ct_cases(dataset_dir)
    single = not is_ct_collection(dataset_dir)
    written = []
    for name, path in cases:
        out = Path(output_dir) / (SINGLE_CT_FOLDER if single else name)
        _LOGGER.info(f"simulating {path} -> {out}")
        written.append(
            simulate_drrs(path, geometry, out, method, step_mm, mu_water_per_mm, noise_i0, num_views, device, seed)
        )
    return written


def bundle_root() -> str:
    """The folder of the bundle whose config is being run (``bundle_root`` in the configs).

    That is the parent of the ``configs`` folder of the running ``monai.bundle.ConfigWorkflow``
    (``python -m monai.bundle run`` or in-process), the folder MONAI itself puts on ``sys.path``,
    so ``models/model.pt`` is found from any working directory. Outside a running workflow (e.g.
    ``python -m monai.bundle ckpt_export`` without ``--bundle_root``) it is the repository's
    ``bundle/`` folder. ``--bundle_root DIR`` overrides it in every case.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            workflow = frame.f_locals.get("self")
            if isinstance(workflow, ConfigWorkflow):
                root = Path(workflow.config_root_path)
                return str((root.parent if root.name == "configs" else root).resolve())
            frame = frame.f_back
    finally:
        del frame
    return str(REPOSITORY_BUNDLE)


def simulate_model_xray(
    checkpoint: str | Path,
    output_dir: str | Path,
    ct: str | Path = "example",
    angle_deg: float = 0.0,
    device: str | torch.device = "cpu",
) -> Path:
    """Simulate one X-ray of a CT in the acquisition geometry of a generator file.

    The geometry is the generator's training geometry (detector size and pitch, distances) with
    one view at ``angle_deg`` (0 = posterior-anterior) and the isocenter at the CT's centre. The
    view is written as a projection folder (see :func:`~monai_gnerf.workflows.simulate_drrs`),
    whose PNG :func:`~monai_gnerf.xray.load_xray` reads back as line integrals.

    Args:
        checkpoint: generator file (``generator.pt`` of ``train.json``, ``models/model.pt``).
        output_dir: projection folder to write.
        ct: CT in HU (file, DICOM series folder, or ``example``).
        angle_deg: orbit angle of the view, degrees.
        device: ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The view's PNG, ``output_dir/png/view_000.png``.

    Raises:
        GnerfInputError: missing or incompatible generator file, missing CT, unknown device.
    """
    device = check_device(device)
    _, geometry, _ = load_generator(checkpoint)
    geometry = replace(geometry, isocenter_mm=None).with_uniform_angles(1, start_deg=angle_deg)
    _LOGGER.info(f"simulating one {geometry.detector_shape} view of {ct} at {angle_deg} deg -> {output_dir}")
    folder = simulate_drrs(ct, geometry, output_dir, device=device)
    return folder / "png" / "view_000.png"
