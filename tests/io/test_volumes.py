from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_utils import write_ct_series

from monai_gnerf.data import example_ct_path, example_mask_path
from monai_gnerf.errors import VolumeError
from monai_gnerf.geometry import load_geometry
from monai_gnerf.io import (
    atomic_output_dir,
    atomic_output_file,
    geometry_from_dicom,
    load_ct,
    removed_on_failure,
    save_volume,
)


def save_nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
    return path


def test_example_ct_is_a_chest_in_hu_with_its_affine():
    ct = load_ct(example_ct_path())
    assert tuple(ct.shape) == (144, 144, 133)
    assert torch.linalg.vector_norm(ct.affine[:3, :3], dim=0).tolist() == pytest.approx([2.5, 2.5, 2.5])
    assert ct.affine[0, 0] < 0  # the source's L-A-S voxel order is kept, not silently reoriented
    assert ct.min() < -900 and ct.max() > 1000  # air and bone
    mask = nib.load(example_mask_path())
    assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine.numpy())


def test_dicom_series_gives_the_ras_affine(tmp_path):
    hu = np.zeros((5, 8, 6), dtype=np.int16)  # (slices, rows, cols)
    hu[2, 3, 4] = 1000
    write_ct_series(tmp_path / "series", hu, spacing_mm=(1.0, 1.5, 2.0), origin_mm=(-10.0, -20.0, 30.0))
    ct = load_ct(tmp_path / "series")
    assert tuple(ct.shape) == (6, 8, 5)  # (cols, rows, slices)
    index = (ct == 1000).nonzero()[0].tolist()
    assert index == [4, 3, 2]
    world = ct.affine @ torch.tensor([*index, 1.0], dtype=torch.float64)
    lps = (-10.0 + 4 * 1.0, -20.0 + 3 * 1.5, 30.0 + 2 * 2.0)
    assert world[:3].tolist() == pytest.approx([-lps[0], -lps[1], lps[2]])


def test_nrrd_and_nifti_of_the_same_ct_agree(tmp_path):
    import itk

    nifti = load_ct(example_ct_path())
    itk.imwrite(itk.imread(str(example_ct_path())), str(tmp_path / "ct.nrrd"))
    nrrd = load_ct(tmp_path / "ct.nrrd")
    assert torch.allclose(nrrd.affine, nifti.affine, atol=1e-4)
    assert torch.equal(nrrd.as_tensor(), nifti.as_tensor())


def test_bad_inputs_give_one_clear_error(tmp_path):
    with pytest.raises(VolumeError, match="CT not found"):
        load_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="no DICOM files"):
        load_ct(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    write_ct_series(mixed, np.zeros((3, 4, 4)))
    write_ct_series(mixed, np.zeros((3, 4, 4)))
    with pytest.raises(VolumeError, match="mixes 2 DICOM series"):
        load_ct(mixed)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"DICM" + b"\x00" * 50)
    with pytest.raises(VolumeError, match="could not read CT"):
        load_ct(corrupt)
    with pytest.raises(VolumeError, match="not a 3D volume"):
        load_ct(save_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32)))
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(VolumeError, match="NaN"):
        load_ct(save_nifti(tmp_path / "nan.nii.gz", nan))
    overflowing = nib.Nifti1Image(np.full((4, 4, 4), 1000, np.int16), np.eye(4))
    overflowing.header.set_slope_inter(1e38, 0)  # 1000 x 1e38 does not fit float32
    nib.save(overflowing, tmp_path / "slope.nii.gz")
    with warnings.catch_warnings(record=True) as noted, pytest.raises(VolumeError, match="NaN or infinite"):
        warnings.simplefilter("always")
        load_ct(tmp_path / "slope.nii.gz")
    assert not [w for w in noted if "overflow" in str(w.message)]  # the refusal is the only line
    with pytest.raises(VolumeError, match="absurd voxel spacing"):
        load_ct(save_nifti(tmp_path / "huge.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1000.0, 1, 1, 1])))
    with pytest.raises(VolumeError, match="unsupported CT file type"):
        load_ct(save_nifti(tmp_path / "x.nii", np.zeros((4, 4, 4), np.float32)).rename(tmp_path / "ct.png"))


def test_geometry_from_dicom_tags(tmp_path):
    tags = {"DistanceSourceToDetector": 1100.0, "DistanceSourceToPatient": 620.0, "ImagerPixelSpacing": [0.5, 0.6]}
    write_ct_series(tmp_path / "s", np.zeros((2, 4, 4)), extra_tags=tags)
    g = geometry_from_dicom(tmp_path / "s", load_geometry("mednerf_chest"))
    assert (g.source_to_detector_mm, g.source_to_isocenter_mm, g.pixel_spacing_mm) == (1100.0, 620.0, (0.5, 0.6))
    write_ct_series(tmp_path / "plain", np.zeros((2, 4, 4)))
    assert geometry_from_dicom(tmp_path / "plain", load_geometry("mednerf_chest")) == load_geometry("mednerf_chest")


def test_atomic_outputs_leave_nothing_behind_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "out") as staging:
            (staging / "half.txt").write_text("partial")
            raise RuntimeError("disk full")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_file(tmp_path / "vol.nii.gz") as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(tmp_path / "out") as staging:
        (staging / "done.txt").write_text("ok")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "done.txt").read_text() == "ok"


def test_a_failed_job_removes_the_folder_it_made_and_keeps_one_that_existed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with removed_on_failure(tmp_path / "new") as out:
            (out / "deep").mkdir(parents=True)
            raise KeyboardInterrupt
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "earlier.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with removed_on_failure(tmp_path / "old") as out:
            (out / "half.txt").write_text("partial")
            raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and (tmp_path / "old" / "earlier.txt").read_text() == "kept"
    with removed_on_failure(tmp_path / "done") as out:
        out.mkdir()
    assert (tmp_path / "done").is_dir()


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_save_volume_round_trips_values_and_an_oblique_affine(tmp_path, suffix):
    """NRRD and MHA (ITK, LPS on disk) read back with the same RAS affine as NIfTI, to float32 precision."""
    import math

    rng = torch.Generator().manual_seed(0)
    volume = torch.rand(7, 6, 5, generator=rng) * 2000.0 - 1000.0
    angle = math.radians(20.0)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                                   [0.0, 0.0, 1.0]], dtype=torch.float64) @ torch.diag(torch.tensor([0.8, 1.2, 2.5],
                                                                                                    dtype=torch.float64))  # fmt: skip
    affine[:3, 3] = torch.tensor([-40.0, 12.5, 100.0])
    path = save_volume(tmp_path / f"volume{suffix}", volume, affine)
    back = load_ct(path)
    assert torch.equal(back.as_tensor(), volume)
    assert torch.allclose(back.affine.double(), affine, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"volume{suffix}"]  # one file, nothing partial


def test_save_volume_refuses_a_format_it_cannot_write_atomically(tmp_path):
    with pytest.raises(VolumeError, match=r"cannot write a volume as v.nhdr: use .nii.gz, .nii, .nrrd or .mha"):
        save_volume(tmp_path / "v.nhdr", torch.zeros(2, 2, 2), torch.eye(4))
    assert not list(tmp_path.iterdir())
