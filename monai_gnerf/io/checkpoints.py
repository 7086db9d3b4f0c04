"""Checkpoint and model files: plain state dicts that load with ``torch.load(weights_only=True)``.

* :func:`load_checkpoint_file`: any checkpoint of ours; a missing, foreign or malicious file
  (pickled code, another program's archive) becomes one clear error.
* :func:`write_model_file` / :func:`read_model_file`: a trained network with everything needed to
  rebuild it, as one dictionary ``{"format", "version", "config", "geometry", "state_dict",
  "extra"}``; the network classes that own a format (e.g.
  :func:`monai_gnerf.networks.generator_file.load_generator`) build the module from it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from monai_gnerf.errors import first_line, GnerfInputError
from monai_gnerf.io.atomic import atomic_output_file

__all__ = ["fingerprint", "load_checkpoint_file", "read_model_file", "write_model_file"]

_MODEL_FILE_VERSION = 2  # 1: the generator files of monai-gnerf 0.1 (config under 'generator_config')


def fingerprint(*parts: Any) -> str:
    """A short hash of a run's inputs (tensors by their values, anything else by its JSON form).

    A checkpoint stores it; a run resumes only from a checkpoint of the same inputs.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            values = part.detach().cpu().contiguous()
            digest.update(str((values.dtype, tuple(values.shape))).encode())
            digest.update(values.numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def load_checkpoint_file(path: str | Path, device: torch.device | str = "cpu", what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; unreadable files become one clear error.

    Args:
        path: the file.
        device: where to load the tensors.
        what: what the file should be, for messages (``"checkpoint"``, ``"VGG16 weights"``).
    """
    if not Path(path).is_file():
        raise GnerfInputError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol note would come before the error line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # pickle, zip and unpickling-policy errors all mean "not our checkpoint"
        # a file that is not a zip archive either (legacy torch.save files load above) is not a torch
        # file at all; torch.load's words for that are obscure ("KeyError: '101'")
        reason = first_line(err) if zipfile.is_zipfile(path) else "it is not a file written by torch.save"
        raise GnerfInputError(f"cannot load {what} {path}: {reason.rstrip('.')}.") from None


def write_model_file(
    path: str | Path,
    file_format: str,
    config: dict[str, Any],
    geometry: dict[str, Any],
    module: torch.nn.Module,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model file atomically (weights on the CPU; JSON-ready config, geometry and extra)."""
    payload = {
        "format": file_format,
        "version": _MODEL_FILE_VERSION,
        "config": config,
        "geometry": geometry,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_output_file(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_model_file(path: str | Path, file_format: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The payload of a model file of ``file_format``, loaded with ``weights_only=True``.

    Raises:
        GnerfInputError: missing, unreadable, or of another format.
    """
    payload = load_checkpoint_file(path, device)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise GnerfInputError(f"{path} is not a {file_format} file.")
    if payload.get("version") != _MODEL_FILE_VERSION:
        raise GnerfInputError(
            f"{path} is a version {payload.get('version')} {file_format} file; this release reads version "
            f"{_MODEL_FILE_VERSION}."
        )
    missing = sorted({"config", "geometry", "state_dict"} - set(payload))
    if missing:
        raise GnerfInputError(f"incompatible {file_format} file {path}: it lacks {missing}.")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GnerfInputError(f"incompatible {file_format} file {path}: its state_dict is not a dict of tensors.")
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise GnerfInputError(f"{path} holds NaN or infinite weights (in {broken[0]}): a diverged training run?")
    return payload
