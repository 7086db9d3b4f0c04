"""The single-view X-ray intake as a MONAI transform (array and dictionary forms).

:class:`ModelViewOfXRay` turns a radiograph file (DICOM DX/CR with its LUTs, NRRD/NIfTI/MHA, PNG,
a projection folder's view) into line integrals on a generator's detector: it reads the file
(:func:`~monai_gnerf.io.load_xray`), applies an explicit pixel spacing when given, and resamples it
(:func:`~monai_gnerf.io.to_model_detector`: spacing and magnification, or the body silhouette's
width when the file has no spacing, and the silhouette centred). The CLI, the bundle's
``inference.json`` and the 3D Slicer module all read X-rays through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.io import load_xray, to_model_detector

__all__ = ["ModelViewOfXRay", "ModelViewOfXRayd"]


class ModelViewOfXRay(Transform):
    """An X-ray file -> ``(rows, cols)`` line integrals on a model's detector.

    Args:
        geometry: the model's acquisition (detector size and pitch, distances).
        reference_max: line integral that the 99.5th percentile of a display-valued image maps
            to (the training views' typical maximum); exact line integrals are kept.
        silhouette_width_fraction: the body's width in the model's views as a fraction of the
            detector; sets the scale of an image without pixel spacing (``None``: no estimate).
        pixel_spacing_mm: the detector pixel size, mm, used instead of the file's (``None``:
            the file's, else the estimate, with a warning).
        centre_silhouette: centre the body silhouette on the model's detector.
        apply_voi_lut: apply a DICOM file's VOI LUT / window.
    """

    def __init__(
        self,
        geometry: ProjectionGeometry,
        reference_max: float,
        silhouette_width_fraction: float | None = None,
        pixel_spacing_mm: float | None = None,
        centre_silhouette: bool = True,
        apply_voi_lut: bool = True,
    ) -> None:
        self.geometry, self.reference_max = geometry, reference_max
        self.silhouette_width_fraction, self.pixel_spacing_mm = silhouette_width_fraction, pixel_spacing_mm
        self.centre_silhouette, self.apply_voi_lut = centre_silhouette, apply_voi_lut

    def __call__(self, path: str | Path) -> torch.Tensor:
        image = load_xray(path, self.apply_voi_lut)
        if self.pixel_spacing_mm is not None:
            image = image.with_pixel_spacing(self.pixel_spacing_mm)
        return to_model_detector(
            image, self.geometry, self.reference_max, self.silhouette_width_fraction, self.centre_silhouette
        )


class ModelViewOfXRayd(MapTransform):
    """Dictionary form of :class:`ModelViewOfXRay`: each key's file path becomes its model view.

    Args:
        keys: keys holding X-ray file paths.
        allow_missing_keys: skip absent keys.
        **intake: the options of :class:`ModelViewOfXRay` (``geometry``, ``reference_max``, ...).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **intake: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.intake = ModelViewOfXRay(**intake)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.intake(d[key])
        return d
