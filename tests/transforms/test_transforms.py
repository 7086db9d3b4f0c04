from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, LoadImaged

from monai_gnerf.data import example_ct_path
from monai_gnerf.geometry import load_geometry
from monai_gnerf.physics import hu_to_attenuation
from monai_gnerf.render import render_drr
from monai_gnerf.transforms import GenerateDRR, GenerateDRRd, HUToAttenuation, HUToAttenuationd


def test_monai_pipeline_from_file_to_drr():
    pipeline = Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            HUToAttenuationd("image"),
            GenerateDRRd("image", geometry="x2ct_biplanar", output_keys="drr"),
        ]
    )
    out = pipeline({"image": str(example_ct_path())})
    drr = out["drr"]
    assert tuple(drr.shape) == (2, 128, 128)
    geometry = load_geometry(drr.meta["geometry"])
    assert geometry.isocenter_mm is not None and geometry.angles_deg == (0.0, 90.0)
    # a chest is 4-8 attenuation lengths thick in the middle of a PA view
    assert 3.0 < drr[0, 54:74, 54:74].mean().item() < 12.0
    assert torch.allclose(drr.as_tensor(), render_drr(out["image"], geometry), atol=1e-5)
    assert torch.diagonal(drr.affine)[1:3].tolist() == pytest.approx([500 / 128, 500 / 128])


def test_array_transforms_keep_metadata_and_views():
    from monai_gnerf.io import load_ct

    ct = load_ct(example_ct_path())
    mu = HUToAttenuation(0.025)(ct)
    assert torch.equal(mu.affine, ct.affine)
    assert torch.allclose(mu.as_tensor(), hu_to_attenuation(ct.as_tensor(), 0.025))
    drr = GenerateDRR("mednerf_chest")(mu, views=[0, 18])
    assert drr.shape[0] == 2 and drr.meta["geometry"]["angles_deg"] == [0.0, 90.0]
    assert torch.equal(drr.meta["volume_affine"], ct.affine)
