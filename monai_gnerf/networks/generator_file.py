"""The generator file: a trained :class:`RadianceFieldGenerator` with its config and geometry.

One file holds what single-view reconstruction needs (``OUT/generator.pt`` of ``train-prior``,
``bundle/models/model.pt``): the generator's state dict and :class:`GeneratorConfig`, the training
geometry (detector, distances, orbit) and free metadata such as the training data's typical line
integral (``extra["reference_max"]``). It loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monai_gnerf.config import config_from_dict, config_to_dict
from monai_gnerf.errors import first_line, GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io.checkpoints import read_model_file, write_model_file
from monai_gnerf.networks.generator import GeneratorConfig, RadianceFieldGenerator

__all__ = ["GENERATOR_FORMAT", "load_generator", "save_generator"]

GENERATOR_FORMAT = "monai-gnerf generator"


def save_generator(
    path: str | Path,
    generator: RadianceFieldGenerator,
    geometry: ProjectionGeometry,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a generator file (state dict + config + geometry; loads with ``weights_only=True``)."""
    return write_model_file(
        path, GENERATOR_FORMAT, config_to_dict(generator.config), geometry.to_dict(), generator, extra
    )


def load_generator(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[RadianceFieldGenerator, ProjectionGeometry, dict[str, Any]]:
    """Load a generator file written by :func:`save_generator`.

    Returns:
        The generator (eval mode), its training geometry and the file's ``extra`` metadata.

    Raises:
        GnerfInputError: missing, unreadable or incompatible file.
    """
    payload = read_model_file(path, GENERATOR_FORMAT, device)
    try:
        config = {"architecture": "graf", **payload["config"]}  # files from before architectures existed
        generator = RadianceFieldGenerator(config_from_dict(GeneratorConfig, config))
        generator.load_state_dict(payload["state_dict"])
        geometry = load_geometry(payload["geometry"])
    except (TypeError, KeyError, RuntimeError, GnerfInputError) as err:
        raise GnerfInputError(f"incompatible generator file {path}: {first_line(err)}") from None
    return generator.to(device).eval(), geometry, dict(payload.get("extra", {}))
