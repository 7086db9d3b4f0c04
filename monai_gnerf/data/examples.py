"""The example data files shipped inside the package: ``example_chest_ct.nii.gz``, its label map and
``chest_prior.pt``, the generative prior trained on the procedural chest population (never on the
example CT), which ``bundle/models/model.pt`` links to."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_ct_path", "example_mask_path", "example_prior_path", "resolve_ct_path"]


def example_ct_path() -> Path:
    """Path of the embedded example chest CT (NIfTI, int16 HU, 2.5 mm isotropic)."""
    return Path(str(resources.files("monai_gnerf.data").joinpath("example_chest_ct.nii.gz")))


def example_mask_path() -> Path:
    """Path of the example CT's segmentation label map (same grid as the CT)."""
    return Path(str(resources.files("monai_gnerf.data").joinpath("example_chest_mask.nii.gz")))


def example_prior_path() -> Path:
    """Path of the shipped generator file (the chest prior of ``bundle/models/model.pt``)."""
    return Path(str(resources.files("monai_gnerf.data").joinpath("chest_prior.pt")))


def resolve_ct_path(ct: str | Path) -> Path:
    """A CT path, with ``example`` standing for the embedded example chest CT."""
    return example_ct_path() if str(ct) == "example" else Path(ct)
