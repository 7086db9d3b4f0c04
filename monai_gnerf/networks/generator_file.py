"""The generator file: a trained :class:`RadianceFieldGenerator` with its config and geometry.

One file holds what single-view reconstruction needs (``OUT/generator.pt`` of ``train-prior``,
``bundle/models/model.pt``): the generator's state dict and :class:`GeneratorConfig`, the training
geometry (detector, distances, orbit) and free metadata such as the training data's typical line
integral (``extra["reference_max"]``). It loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_gnerf.config import config_from_dict, config_to_dict
from monai_gnerf.errors import first_line, GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io.checkpoints import read_model_file, write_model_file
from monai_gnerf.networks.generator import GeneratorConfig, RadianceFieldGenerator

__all__ = ["GENERATOR_FORMAT", "GeneratorHeader", "load_generator", "read_generator_header", "save_generator"]

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


@dataclass(frozen=True)
class GeneratorHeader:
    """What a generator file says besides its weights: enough to build the network (``config``),
    to place it (``geometry``) and to read X-rays for it (``extra``).

    Attributes:
        config: the generator's sizes and rendering model.
        geometry: its training acquisition.
        extra: free metadata (``reference_max``, ``silhouette_width_fraction``, the learned
            latent distribution, the training run's figures).
    """

    config: GeneratorConfig
    geometry: ProjectionGeometry
    extra: dict[str, Any]

    @property
    def reference_max(self) -> float:
        """The training views' typical bright line integral (the value shown as 1.0 when the file has none)."""
        return float(self.extra.get("reference_max", self.config.value_scale))


_EXTRA_NUMBERS = {  # the numbers of ``extra`` a fit reads, each finite and in (low, high]
    "reference_max": (0.0, math.inf),
    "silhouette_width_fraction": (0.0, 1.0),
    "map_residual_mse": (0.0, math.inf),
}


def read_generator_header(path: str | Path) -> GeneratorHeader:
    """The :class:`GeneratorHeader` of a generator file (the weights are checked, not built).

    Raises:
        GnerfInputError: missing, unreadable or incompatible file.
    """
    return _header(read_model_file(path, GENERATOR_FORMAT), path)


def _header(payload: dict[str, Any], path: str | Path) -> GeneratorHeader:
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        raise GnerfInputError(f"incompatible generator file {path}: its extra metadata is a {type(extra).__name__}, not a mapping.")
    for key, (low, high) in _EXTRA_NUMBERS.items():
        value = extra.get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and low < value <= high):
            raise GnerfInputError(f"incompatible generator file {path}: its {key} must be a finite number in "
                                  f"({low:g}, {high:g}], got {value!r}.")  # fmt: skip
    try:
        config = {"architecture": "graf", **payload["config"]}  # files from before architectures existed
        return GeneratorHeader(config_from_dict(GeneratorConfig, config), load_geometry(payload["geometry"]),
                               dict(extra))  # fmt: skip
    except (TypeError, KeyError, GnerfInputError) as err:
        raise GnerfInputError(f"incompatible generator file {path}: {first_line(err)}") from None


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
    header = _header(payload, path)
    try:
        generator = RadianceFieldGenerator(header.config)
        generator.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, RuntimeError, GnerfInputError) as err:
        raise GnerfInputError(f"incompatible generator file {path}: {_one_line(err)}") from None
    return generator.to(device).eval(), header.geometry, header.extra


def _one_line(err: BaseException) -> str:
    """An error's message on one line: ``load_state_dict`` puts the keys it names on the lines after
    its first ("Error(s) in loading state_dict for ...:"), which alone would say nothing."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) if len(lines) > 1 else first_line(err)
