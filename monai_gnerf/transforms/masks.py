"""Support masks for mNeRF-style masking: from a CT, or carved from the projections alone.

* :class:`BodyMask` / :class:`BodyMaskd`: threshold + largest connected component + hole filling
  (per axial slice, so lungs and airways count as inside) + dilation by a margin in **mm**,
  exact on anisotropic grids (Euclidean distance transform with the voxel spacing).
* :func:`silhouette_mask`: space carving: a voxel stays inside when every view sees attenuation
  along its ray (line integral above a threshold, :func:`visual_hull`), then the same dilation.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, grid_detector_coordinates

__all__ = ["SEEN_LINE_INTEGRAL", "dilate_mm", "BodyMask", "BodyMaskd", "silhouette_mask", "visual_hull", "voxel_spacing_mm"]

SEEN_LINE_INTEGRAL = 0.05
"""A ray whose line integral exceeds this saw an object (about 2.5 mm of water)."""


def voxel_spacing_mm(affine: torch.Tensor) -> tuple[float, float, float]:
    """Voxel size along each array axis, mm."""
    return tuple(float(s) for s in torch.linalg.vector_norm(torch.as_tensor(affine)[:3, :3], dim=0))


def dilate_mm(mask: np.ndarray, spacing_mm: Sequence[float], margin_mm: float) -> np.ndarray:
    """Grow a boolean mask by ``margin_mm`` (Euclidean, in mm, honouring anisotropic spacing)."""
    if margin_mm <= 0:
        return mask.copy()
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    return distance <= margin_mm


def _axial_axis(affine: torch.Tensor) -> int:
    """Array axis most aligned with the world superior-inferior (z) axis."""
    return int(torch.as_tensor(affine)[2, :3].abs().argmax())


class BodyMask(Transform):
    """Binary body/head mask of a CT (HU), dilated by a margin in mm (mNeRF uses 3 mm).

    Args:
        threshold_hu: voxels above this belong to the object (default -900 HU: above air and its
            noise, so low-density padding and clothing stay inside and the projections agree).
        margin_mm: dilation margin, mm.
    """

    def __init__(self, threshold_hu: float = -900.0, margin_mm: float = 3.0) -> None:
        self.threshold_hu = threshold_hu
        self.margin_mm = margin_mm

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        volume = img[0] if img.ndim == 4 else img
        affine = getattr(img, "affine", None)
        if affine is None:
            raise GnerfInputError("BodyMask needs a MetaTensor with an affine (for the margin in mm).")
        tissue = volume.detach().cpu().numpy() > self.threshold_hu
        labels, count = ndimage.label(tissue)
        if count == 0:
            raise GnerfInputError(f"no voxel above {self.threshold_hu} HU: is this a CT in HU?")
        sizes = ndimage.sum_labels(tissue, labels, index=np.arange(1, count + 1))
        body = labels == (1 + int(np.argmax(sizes)))
        axis = _axial_axis(affine)
        body = np.moveaxis(body, axis, 0)
        body = np.stack([ndimage.binary_fill_holes(s) for s in body])
        body = np.moveaxis(body, 0, axis)
        mask = dilate_mm(body, voxel_spacing_mm(affine), self.margin_mm)
        out = torch.from_numpy(mask.astype(np.uint8)).to(volume.device)
        return MetaTensor(out[None] if img.ndim == 4 else out, affine=torch.as_tensor(affine))


class BodyMaskd(MapTransform):
    """Dictionary wrapper of :class:`BodyMask`; writes the mask to ``mask_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        threshold_hu: float = -900.0,
        margin_mm: float = 3.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.masker = BodyMask(threshold_hu, margin_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key] = self.masker(d[key])
        return d


def visual_hull(
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    threshold: float = SEEN_LINE_INTEGRAL,
) -> torch.Tensor:
    """Space carving on a grid: ``True`` where no view projects the voxel centre onto a detector
    pixel whose line integral is at most ``threshold`` (voxels projecting off a detector are kept).

    Returns:
        boolean tensor of ``shape`` (may be all ``False``).
    """
    affine = torch.as_tensor(affine, dtype=torch.float64)
    inside = torch.ones(*shape, dtype=torch.bool)
    rows, cols = geometry.detector_shape
    for view in range(geometry.num_views):
        row, col, _ = grid_detector_coordinates(geometry, view, shape, affine)
        r = torch.round(row).long()
        c = torch.round(col).long()
        on_detector = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        seen = projections[view].cpu()[r.clamp(0, rows - 1), c.clamp(0, cols - 1)] > threshold
        inside &= seen | ~on_detector
    return inside


def silhouette_mask(
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    threshold: float = SEEN_LINE_INTEGRAL,
    margin_mm: float = 3.0,
) -> torch.Tensor:
    """Space-carving mask from line-integral projections on a reconstruction grid.

    A voxel is carved away when some view projects it onto a detector pixel whose line integral
    is below ``threshold`` (the ray saw nothing; :func:`visual_hull`); voxels projecting off a
    detector are kept. The rest is dilated by ``margin_mm``.

    Returns:
        ``uint8`` mask of ``shape``.

    Raises:
        GnerfInputError: every voxel is carved away (no ray that crosses the grid saw anything,
            e.g. all-zero projections or an object outside the grid): a fit would give air.
    """
    inside = visual_hull(projections, geometry, shape, affine, threshold)
    if not inside.any():
        raise GnerfInputError(
            f"the silhouette mask is empty: no detector pixel that sees the grid has a line integral above {threshold} "
            "(are these line integrals, of an object inside the grid?)."
        )
    carved = inside.numpy()
    return torch.from_numpy(dilate_mm(carved, voxel_spacing_mm(affine), margin_mm).astype(np.uint8))
