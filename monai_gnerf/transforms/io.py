"""Loading a CT as a MONAI transform (array and dictionary forms), with the library's checks, and
the CT preprocessing of prior training.

:class:`LoadCT` reads a CT file or a DICOM series folder through
:func:`~monai_gnerf.io.load_ct` (MONAI's ``LoadImage`` with one reader per format, NIfTI header
checks, evenly spaced DICOM slices): a ``MetaTensor`` in HU with its RAS affine, errors a user can
fix as one sentence. It starts the CT pipelines: :func:`ct_view_preprocessing` is
``LoadCTd -> HUToAttenuationd -> GenerateDRRd``, what a dataset of CT views applies to each CT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Mapping

from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Transform

from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.io import load_ct
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.transforms.drr import GenerateDRRd
from monai_gnerf.transforms.intensity import HUToAttenuationd

__all__ = ["LoadCT", "LoadCTd", "ct_view_preprocessing"]


class LoadCT(Transform):
    """A CT (file or DICOM series folder) -> ``MetaTensor`` ``(I, J, K)`` in HU with its affine."""

    def __call__(self, path: str | Path) -> MetaTensor:
        return load_ct(path)


class LoadCTd(MapTransform):
    """Dictionary form of :class:`LoadCT`: each key's path becomes its CT."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def ct_view_preprocessing(
    geometry: ProjectionGeometry | str | Path | dict[str, Any], mu_water_per_mm: float = MU_WATER_PER_MM
) -> Compose:
    """``{"image": CT path}`` -> ``{"image": attenuation (1/mm), "views": DRRs (views, rows, cols)}``.

    ``LoadCTd`` (HU), ``HUToAttenuationd``, then ``GenerateDRRd`` into ``"views"`` (Joseph
    projector; the isocenter at the CT's centre, recorded in ``views.meta["geometry"]``).
    """
    return Compose([LoadCTd("image"), HUToAttenuationd("image", mu_water_per_mm),
                    GenerateDRRd("image", geometry, output_keys="views")])  # fmt: skip
