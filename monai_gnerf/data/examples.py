"""The example data files shipped inside the package (``example_chest_ct.nii.gz`` and its label map)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_ct_path", "example_mask_path", "resolve_ct_path"]


def example_ct_path() -> Path:
    """Path of the embedded example chest CT (NIfTI, int16 HU, 2.5 mm isotropic)."""
    return Path(str(resources.files("monai_gnerf.data").joinpath("example_chest_ct.nii.gz")))


def example_mask_path() -> Path:
    """Path of the example CT's segmentation label map (same grid as the CT)."""
    return Path(str(resources.files("monai_gnerf.data").joinpath("example_chest_mask.nii.gz")))


def resolve_ct_path(ct: str | Path) -> Path:
    """A CT path, with ``example`` standing for the embedded example chest CT."""
    return example_ct_path() if str(ct) == "example" else Path(ct)
