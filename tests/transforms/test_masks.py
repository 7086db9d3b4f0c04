from __future__ import annotations

import torch
from monai.data import MetaTensor

from gnerf_testing import small_cone

from monai_gnerf.data import Ellipsoid, EllipsoidPhantom
from monai_gnerf.data.phantoms import grid_affine
from monai_gnerf.render import render_drr
from monai_gnerf.transforms import BodyMask, BodyMaskd, silhouette_mask


def test_body_mask_margin_is_in_mm_on_an_anisotropic_grid():
    hu = torch.full((40, 40, 40), -1000.0)
    hu[15:25, 15:25, 15:25] = 40.0  # a 10-voxel tissue cube
    hu[2:4, 2:4, 2:4] = 40.0  # a small separate blob: not the largest component
    affine = torch.diag(torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=torch.float64))
    mask = BodyMask(margin_mm=6.0)(MetaTensor(hu, affine=affine))
    assert torch.equal(mask.affine, affine)
    nonzero = mask.nonzero()
    lo, hi = nonzero.min(0).values.tolist(), nonzero.max(0).values.tolist()
    assert lo == [15 - 6, 15 - 3, 15 - 1] and hi == [24 + 6, 24 + 3, 24 + 1]  # 6 mm = 6, 3, 1.5 voxels
    assert mask[3, 3, 3] == 0


def test_body_mask_fills_cavities_like_lungs():
    hu = torch.full((30, 30, 20), -1000.0)
    hu[5:25, 5:25, :] = 40.0
    hu[10:20, 10:20, 2:18] = -850.0  # air-like lung inside the body
    out = BodyMaskd("ct", margin_mm=0.0)({"ct": MetaTensor(hu, affine=torch.eye(4, dtype=torch.float64))})
    assert out["mask"][15, 15, 10] == 1 and out["mask"][2, 2, 10] == 0


def test_silhouette_mask_keeps_the_object_and_carves_the_corners():
    blob = EllipsoidPhantom((Ellipsoid((0.0, 0.0, 0.0), (30.0, 20.0, 25.0), 0.0, 0.02),))
    shape, spacing = (32, 32, 32), (3.0, 3.0, 3.0)
    affine = grid_affine(shape, spacing)
    volume = blob.voxelize(shape, spacing)
    g = small_cone(30, 64, 3.0)
    mask = silhouette_mask(render_drr(volume, g), g, shape, affine, margin_mm=3.0)
    inside = volume > 0
    assert mask[inside].all()  # never carves the object
    assert mask.float().mean() < 0.4 * 1.0  # most of the cube is carved
    assert mask[0, 0, 0] == 0 and mask[16, 16, 16] == 1
    assert mask.sum() < 2.0 * inside.sum()  # a tight hull, not the whole box
