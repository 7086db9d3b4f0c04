"""MONAI transforms that render DRRs from attenuation volumes (array and dictionary forms).

Example::

    from monai.transforms import Compose, LoadImaged
    from monai_gnerf.transforms import GenerateDRRd, HUToAttenuationd

    pipeline = Compose([
        LoadImaged("image", ensure_channel_first=True),
        HUToAttenuationd("image"),
        GenerateDRRd("image", geometry="mednerf_chest"),
    ])
    projections = pipeline({"image": "ct.nii.gz"})["image"]  # (72, 128, 128) line integrals
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_gnerf.geometry import ProjectionGeometry, load_geometry, projection_affine
from monai_gnerf.render.projector import RenderMethod, VolumeProjector

__all__ = ["GenerateDRR", "GenerateDRRd"]


class GenerateDRR(Transform):
    """Render line-integral DRRs from an attenuation volume (1/mm) with its affine.

    The output is a ``MetaTensor`` of shape ``(views, rows, cols)`` whose metadata holds the
    resolved geometry (``meta["geometry"]``, a JSON-ready dict with the isocenter filled in) and
    the volume's affine (``meta["volume_affine"]``), so a reconstruction can put its result back
    on the source grid.

    Args:
        geometry: a :class:`ProjectionGeometry`, preset name, JSON path or dict.
        method: ``"joseph"``, ``"trilinear"`` or ``"siddon"``.
        step_mm: ray-marching step for ``"trilinear"``.
        progress: show a progress bar over views.
    """

    def __init__(
        self,
        geometry: ProjectionGeometry | str | Path | dict[str, Any],
        method: RenderMethod = "joseph",
        step_mm: float | None = None,
        progress: bool = False,
    ) -> None:
        self.geometry = load_geometry(geometry)
        self.method = method
        self.step_mm = step_mm
        self.progress = progress

    def __call__(self, img: torch.Tensor, views: Sequence[int] | None = None) -> MetaTensor:
        projector = VolumeProjector(img, method=self.method, step_mm=self.step_mm)
        geometry = self.geometry.resolved(projector.center_mm.tolist())
        if views is not None:
            geometry = geometry.subset(views)
        drr = projector.project(geometry, progress=self.progress)
        meta = {"geometry": geometry.to_dict(), "volume_affine": projector.affine, "units": "line integral"}
        if isinstance(img, MetaTensor) and "filename_or_obj" in img.meta:
            meta["filename_or_obj"] = img.meta["filename_or_obj"]
        return MetaTensor(drr, affine=projection_affine(geometry), meta=meta)


class GenerateDRRd(MapTransform):
    """Dictionary wrapper of :class:`GenerateDRR`; results replace the inputs unless
    ``output_keys`` names other keys."""

    def __init__(
        self,
        keys: KeysCollection,
        geometry: ProjectionGeometry | str | Path | dict[str, Any],
        method: RenderMethod = "joseph",
        step_mm: float | None = None,
        output_keys: KeysCollection | None = None,
        progress: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.renderer = GenerateDRR(geometry, method, step_mm, progress)
        self.output_keys = list(self.keys) if output_keys is None else list(
            [output_keys] if isinstance(output_keys, str) else output_keys
        )
        if len(self.output_keys) != len(self.keys):
            raise ValueError("output_keys must have one entry per key.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.renderer(d[key])
        return d
