"""A catalogue of bad inputs, bad options and file-system faults at the CLI, plus fuzzing.

Each case must end with exit status 2, one stderr line naming the problem (no traceback) and
nothing new left in the working folder. Inputs are tiny (a 16^3 CT, 4 views of 16x16 pixels).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_gnerf.apps.cli import main
from monai_gnerf.data import example_prior_path
from monai_gnerf.geometry import load_geometry
from monai_gnerf.io import atomic, read_png16
from monai_gnerf.networks import load_generator, save_generator
from dicom_utils import write_ct_series, write_dx

TINY_GEOMETRY = {
    "beam": "cone",
    "angles_deg": [0.0, 90.0, 180.0, 270.0],
    "detector_shape": [16, 16],
    "pixel_spacing_mm": [8.0, 8.0],
    "source_to_isocenter_mm": 500.0,
    "source_to_detector_mm": 1000.0,
}
FIT = ["--max_iterations", "2", "--budget_s", "5", "--spacing_mm", "16"]


def _ct(path: Path, data: np.ndarray | None = None, spacing_mm: float = 4.0) -> Path:
    data = np.random.default_rng(0).uniform(-1000, 500, (16, 16, 16)).astype(np.int16) if data is None else data
    nib.save(nib.Nifti1Image(data, np.diag([spacing_mm] * 3 + [1.0])), path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A CT, a geometry, its projection folder and a few broken variants, in a read-only-by-convention folder."""
    root = tmp_path_factory.mktemp("inputs")
    _ct(root / "ct.nii.gz")
    (root / "geometry.json").write_text(json.dumps(TINY_GEOMETRY))
    main(["drr", str(root / "ct.nii.gz"), "--geometry", str(root / "geometry.json"), "--out", str(root / "proj")])
    (root / "a_file").write_text("not a folder")
    return root


def _copy_projections(inputs: Path, work: Path, name: str) -> Path:
    folder = work / name
    shutil.copytree(inputs / "proj", folder)
    return folder


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _fails_with_one_line(argv: list[str], work: Path, capsys, pattern: str) -> str:
    """Run the CLI; assert status 2, one line matching ``pattern``, and nothing new under ``work``."""
    before = _snapshot(work)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert err and err[-1].startswith("monai-gnerf: error: "), err
    assert not any("Traceback" in line for line in err)
    assert re.search(pattern, err[-1]), err[-1]
    assert _snapshot(work) == before, "partial output left behind"
    return err[-1]


def _options(inputs: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    ct, geo, proj = str(inputs / "ct.nii.gz"), str(inputs / "geometry.json"), str(inputs / "proj")
    drr = ["drr", ct, "--geometry", geo, "--out", str(out / "d")]
    rec = ["reconstruct", proj, "--out", str(out / "r.nii.gz"), *FIT]
    return {
        "views abc": (drr + ["--views", "abc"], r"views must be an integer >= 1 or null, got 'abc'"),
        "views 0": (drr + ["--views", "0"], r"views must be an integer >= 1"),
        "ten billion views": (drr + ["--views", "10000000000"], r"10000000000 views of .* do not fit a projection stack"),  # before any angle
        "ten billion single-view views": (["single-view", str(inputs / "proj/png/view_000.png"), "--out", str(out / "s"),
                                           "--views", "10000000000"], r"10000000000 views of .* do not fit a projection stack"),  # fmt: skip
        "method raytrace": (drr + ["--method", "raytrace"], r"method must be 'joseph', 'trilinear' or 'siddon'"),
        "step_mm 0": (drr + ["--method", "trilinear", "--step_mm", "0"], r"step_mm must be a number > 0"),
        "noise_i0 -1": (drr + ["--noise_i0", "-1"], r"noise_i0 must be a number >= 100"),
        "negative water": (drr + ["--mu_water_per_mm", "-0.02"], r"mu_water_per_mm must be a number >= 0.001 and <= 1"),
        "water of 1e30 per mm": (drr + ["--mu_water_per_mm", "1e30"], r"mu_water_per_mm must be a number >= 0.001 and <= 1"),
        "one photon": (drr + ["--noise_i0", "1"], r"noise_i0 must be a number >= 100 and <= 1e\+09"),
        "1e300 photons": (drr + ["--noise_i0", "1e300"], r"noise_i0 must be a number >= 100 and <= 1e\+09"),
        "step of 1e9 mm": (drr + ["--method", "trilinear", "--step_mm", "1e9"],
                           r"step_mm 1e\+09 must be between 0.01 and 1 times the finest voxel spacing"),
        "step of 1 nm": (drr + ["--method", "trilinear", "--step_mm", "1e-6"],
                         r"step_mm 1e-06 must be between 0.01 and 1 times the finest voxel spacing"),
        "unknown option": (drr + ["--misspeled", "3"], r"unknown option --misspeled"),
        "ambiguous -t": (rec + ["-t", "0.1"], r"-t could be --tensorboard_dir or --tv_weight; write the option in full"),
        "short option of nothing": (rec + ["-x", "1"], r"-x names no option of this command"),
        "unknown device": (drr + ["--device", "tpu"], r"unknown device 'tpu'"),
        "iterations abc": (rec + ["--max_iterations", "abc"], r"max_iterations must be an integer >= 1"),
        "samples_per_ray 0": (rec + ["--samples_per_ray", "0"], r"samples_per_ray must be an integer >= 1"),
        "log_every 0": (rec + ["--log_every", "0"], r"log_every must be an integer >= 1"),
        "grid_levels 0": (rec + ["--grid_levels", "0"], r"grid_levels must be an integer >= 1"),
        "learning_rate -1": (rec + ["--learning_rate", "-1"], r"learning_rate must be a number > 0"),
        "final_lr_fraction 2": (rec + ["--final_lr_fraction", "2"], r"final_lr_fraction must be a number > 0 and <= 1"),
        "tv_weight -1": (rec + ["--tv_weight", "-1"], r"tv_weight must be a number >= 0"),
        "terabyte grid": (rec[:4] + ["--spacing_mm", "0.001"], r"reconstruction grid needs about .* of memory"),
        "axial_margin_mm -5": (rec + ["--axial_margin_mm", "-5"], r"axial_margin_mm must be a number >= 0"),
        "terabyte end-face margins": (rec + ["--axial_margin_mm", "1e9"],
                                      r"grid, .*extended by \d+ \+ \d+ voxels past its end faces, needs about .* of memory"),
        "terabyte demo grid": (["demo", "--out", str(out / "dm"), "--views", "2", "--spacing_mm", "0.0001"],
                               r"reconstruction grid needs about .* of memory"),  # fmt: skip
        "unknown method": (rec + ["--method", "sart"], r"method must be 'grid', 'naf', 'nerf' or 'fdk'"),
        "terabyte ray batch": (rec + ["--rays_per_batch", "1000000000000"],
                               r"a batch of 1000000000000 rays of 96 samples \(grid\) needs about .* of memory"),
        "terabyte nerf samples": (rec + ["--method", "nerf", "--samples_per_ray", "100000000"],
                                  r"a batch of 1024 rays of 100000000 samples \(nerf\) needs about"),
        "unknown render_mode": (["train-prior", "--out", str(out / "p"), "--render_mode", "x"], r"render_mode must be"),
        "zero subjects": (["train-prior", "--out", str(out / "p"), "--subjects", "0"], r"subjects must be an integer >= 1"),
        "volume_size 0": (["single-view", str(inputs / "proj/png/view_000.png"), "--out", str(out / "s"),
                           "--volume_size", "0"], r"volume_size must be an integer >= 2"),  # fmt: skip
        "volume_size huge": (["single-view", str(inputs / "proj/png/view_000.png"), "--out", str(out / "s"),
                              "--volume_size", "100000"], r"100000\^3 volume needs about .* of memory"),  # fmt: skip
    }


OPTION_CASES = list(_options(Path("."), Path(".")))


@pytest.mark.parametrize("case", OPTION_CASES)
def test_bad_options_are_one_line_before_any_work(case, inputs, tmp_path, capsys):
    argv, pattern = _options(inputs, tmp_path)[case]
    _fails_with_one_line(argv, tmp_path, capsys, pattern)


def _write_corrupt(kind: str, inputs: Path, work: Path) -> tuple[list[str], str]:
    """Make one broken input under ``work``; return the command that must refuse it and the expected message."""
    out = ["--out", str(work / "out")]
    if kind == "truncated stack":
        folder = _copy_projections(inputs, work, "p")
        stack = folder / "projections.nii.gz"
        stack.write_bytes(stack.read_bytes()[:300])
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), *FIT], r"could not read projection stack"
    if kind == "corrupt projections.json":
        folder = _copy_projections(inputs, work, "p")
        (folder / "projections.json").write_text("{corrupt")
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), *FIT], r"projections.json is not valid JSON"
    if kind == "negative projections":
        folder = _copy_projections(inputs, work, "p")
        stack = nib.load(folder / "projections.nii.gz")
        nib.save(nib.Nifti1Image(-np.asarray(stack.dataobj) - 1.0, stack.affine), folder / "projections.nii.gz")
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), *FIT], r"below zero by more than noise"
    if kind == "all-zero projections":
        folder = _copy_projections(inputs, work, "p")
        stack = nib.load(folder / "projections.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(stack.shape, np.float32), stack.affine), folder / "projections.nii.gz")
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), *FIT], r"the silhouette mask is empty"
    if kind == "empty checkpoint":
        (work / "empty.pt").write_bytes(b"")
        return ["single-view", str(inputs / "proj/png/view_000.png"), str(work / "empty.pt"), *out], r"cannot load checkpoint"
    if kind == "NaN-weight checkpoint":
        generator, geometry, extra = load_generator(example_prior_path())
        with torch.no_grad():
            next(generator.parameters()).fill_(float("nan"))
        save_generator(work / "nan.pt", generator, geometry, extra)
        return ["single-view", str(inputs / "proj/png/view_000.png"), str(work / "nan.pt"), *out], r"NaN or infinite weights"
    if kind == "corrupt PNG":
        (work / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nxxxx")
        return ["single-view", str(work / "x.png"), *out], r"could not read X-ray image"
    if kind == "1x1 PNG":
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(work / "x.png")
        return ["single-view", str(work / "x.png"), *out], r"has shape \(1, 1\); an X-ray is one 2D image of at least 2x2 pixels"
    if kind == "constant PNG":
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(work / "x.png")
        return ["single-view", str(work / "x.png"), *out], r"constant image"
    if kind == "DX with RescaleSlope 0":
        write_dx(work / "x.dcm", np.arange(64 * 64).reshape(64, 64) % 4000, RescaleSlope=0, RescaleIntercept=0)
        return ["single-view", str(work / "x.dcm"), *out], r"RescaleSlope 0"
    if kind == "CT with zero spacing":
        path = work / "zero.nii"
        _ct(path)
        raw = bytearray(path.read_bytes())
        raw[80:84] = np.float32(0.0).tobytes()  # pixdim[1]
        path.write_bytes(bytes(raw))
        return ["drr", str(path), "--geometry", str(inputs / "geometry.json"), *out], r"voxel spacing of \[0.0, 4.0, 4.0\]"
    if kind == "complex CT":
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.complex64), np.eye(4)), work / "c.nii.gz")
        return ["drr", str(work / "c.nii.gz"), *out], r"holds complex values"
    if kind == "CT of 1e30 HU":
        _ct(work / "h.nii.gz", np.full((16, 16, 16), 1e30, np.float32))
        return ["drr", str(work / "h.nii.gz"), *out], r"voxel values from 1e\+30 to 1e\+30, outside any CT's Hounsfield scale"
    if kind == "truncated CT":
        (work / "t.nii.gz").write_bytes((inputs / "ct.nii.gz").read_bytes()[:200])
        return ["drr", str(work / "t.nii.gz"), *out], r"could not read CT"
    if kind == "DICOM series with a missing slice":
        files = write_ct_series(work / "series", np.zeros((6, 8, 8)), spacing_mm=(1.0, 1.0, 2.0))
        files[3].unlink()
        return ["drr", str(work / "series"), *out], r"not evenly spaced: a 4 mm gap after slice 2 where the others are 2 mm"
    if kind == "DICOM series with a gantry tilt":  # slices 2 mm apart along z, their planes tilted 20 degrees
        tilt = np.radians(20.0)
        write_ct_series(work / "series", np.zeros((6, 8, 8)), spacing_mm=(1.0, 1.0, 2.0),
                        extra_tags={"ImageOrientationPatient": [1, 0, 0, 0, np.cos(tilt), np.sin(tilt)]})  # fmt: skip
        return ["drr", str(work / "series"), *out], r"has a gantry tilt of 20.0 deg"
    if kind in _BROKEN_PROJECTION_META:
        folder = _copy_projections(inputs, work, "p")
        meta = json.loads((folder / "projections.json").read_text())
        edit, pattern = _BROKEN_PROJECTION_META[kind]
        (folder / "projections.json").write_text(json.dumps({**meta, **edit}))
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), *FIT], pattern
    if kind in ("generator extra not a mapping", "NaN latent covariance"):
        generator, geometry, extra = load_generator(example_prior_path())
        if kind == "NaN latent covariance":
            save_generator(work / "g.pt", generator, geometry, {**extra, "latent_covariance": torch.full_like(
                torch.as_tensor(extra["latent_covariance"]), float("nan"))})  # fmt: skip
            pattern = r"covariance is not positive definite"
        else:
            payload = torch.load(example_prior_path(), weights_only=True)
            torch.save({**payload, "extra": "abc"}, work / "g.pt")
            pattern = r"incompatible generator file .*g.pt: its extra metadata is a str, not a mapping"
        return ["single-view", str(inputs / "proj/png/view_000.png"), str(work / "g.pt"), *out], pattern
    if kind == "generator missing a weight":
        payload = torch.load(example_prior_path(), weights_only=True)
        state = dict(payload["state_dict"])
        missing = sorted(state)[0]
        del state[missing]
        torch.save({**payload, "state_dict": state}, work / "g.pt")
        pattern = rf"incompatible generator file .*g.pt: Error\(s\) in loading state_dict .* Missing key\(s\) .*{re.escape(missing)}"
        return ["single-view", str(inputs / "proj/png/view_000.png"), str(work / "g.pt"), *out], pattern
    if kind in _BROKEN_GENERATOR_EXTRAS:
        payload = torch.load(example_prior_path(), weights_only=True)
        key, value = _BROKEN_GENERATOR_EXTRAS[kind]
        torch.save({**payload, "extra": {**payload["extra"], key: value}}, work / "g.pt")
        pattern = rf"incompatible generator file .*g.pt: its {key} must be a finite number in \(0, "
        return ["single-view", str(inputs / "proj/png/view_000.png"), str(work / "g.pt"), *out], pattern
    if kind == "mask that is a text file":
        (work / "mask.nii.gz").write_text("not an image")
        return ["reconstruct", str(inputs / "proj"), "--out", str(work / "r.nii.gz"), *FIT, "--mask",
                str(work / "mask.nii.gz")], r"could not read mask .*mask.nii.gz"  # fmt: skip
    if kind == "DICOM series with zero PixelSpacing":
        write_ct_series(work / "series", np.zeros((6, 8, 8)), spacing_mm=(0.0, 0.0, 2.0))
        return ["drr", str(work / "series"), *out], r"PixelSpacing \(0028,0030\) \[0.0, 0.0\] is not a pixel spacing"
    if kind == "DICOM series without PixelSpacing":
        import pydicom

        for path in write_ct_series(work / "series", np.zeros((6, 8, 8))):
            ds = pydicom.dcmread(path)
            del ds.PixelSpacing
            ds.save_as(path)
        return ["drr", str(work / "series"), *out], r"has no PixelSpacing \(0028,0030\)"
    if kind == "DICOM series of two slice sizes":
        import pydicom

        files = write_ct_series(work / "series", np.zeros((6, 8, 8)))
        ds = pydicom.dcmread(files[2])
        ds.Rows = ds.Columns = 4
        ds.PixelData = np.zeros((4, 4), np.int16).tobytes()
        ds.save_as(files[2])
        return ["drr", str(work / "series"), *out], r"slices of different sizes \(rows, columns\) \[\(4, 4\), \(8, 8\)\]"
    if kind == "MedNeRF folder with an unreadable view":
        for subject in ("s0", "s1"):
            (work / "mn" / subject).mkdir(parents=True)
            for view in range(4):
                Image.fromarray(np.full((16, 16), 50 + view, np.uint8)).save(work / "mn" / subject / f"{view:03d}.png")
        (work / "mn" / "s1" / "001.png").write_text("x")
        return ["train-prior", "--data", str(work / "mn"), *out, "--max_iterations", "1", "--pca_init", "False",
                "--volume_weight", "0"], r"could not read PNG .*s1/001.png"  # fmt: skip
    if kind == "source inside the volume":
        geometry = {**TINY_GEOMETRY, "source_to_isocenter_mm": 20.0, "source_to_detector_mm": 100.0}
        (work / "g.json").write_text(json.dumps(geometry))
        return ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(work / "g.json"), *out], r"source of view 0 .* inside the volume"
    if kind == "projections whose source lies inside the grid":
        folder = _copy_projections(inputs, work, "p")
        geometry = json.loads((folder / "geometry.json").read_text())
        (folder / "geometry.json").write_text(json.dumps({**geometry, "source_to_isocenter_mm": 20.0}))
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), "--method", "fdk"], r"source of view 0 .* inside the volume"
    if kind == "a learning rate that diverges":  # the error is the last line: the progress bar closes first
        return (["reconstruct", str(inputs / "proj"), "--out", str(work / "r.nii.gz"), "--learning_rate", "1e30",
                 "--max_iterations", "5", "--budget_s", "30"],
                r"the fit diverged at iteration \d+ \(loss (inf|nan)\): lower learning_rate \(it is 1e\+30\)")  # fmt: skip
    if kind == "projections whose geometry has no isocenter":
        folder = _copy_projections(inputs, work, "p")
        geometry = json.loads((folder / "geometry.json").read_text())
        (folder / "geometry.json").write_text(json.dumps({**geometry, "isocenter_mm": None}))
        return ["reconstruct", str(folder), "--out", str(work / "r.nii.gz"), "--method", "fdk"], r"geometry.json has no isocenter_mm"
    if kind == "volume outside the beam":
        geometry = {**TINY_GEOMETRY, "isocenter_mm": [1e6, 0.0, 0.0]}
        (work / "g.json").write_text(json.dumps(geometry))
        return ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(work / "g.json"), *out], r"lies outside the beam in every view"
    if kind == "projections of 6 TB":
        geometry = {**TINY_GEOMETRY, "detector_shape": [32_000, 32_000], "angles_deg": list(range(1000))}
        (work / "g.json").write_text(json.dumps(geometry))
        return ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(work / "g.json"), *out], r"(needs about .* of memory|not enough disk space)"
    if kind in _BROKEN_GEOMETRY_FILES:
        text, pattern = _BROKEN_GEOMETRY_FILES[kind]
        (work / "g.json").write_bytes(text)
        return ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(work / "g.json"), *out], pattern
    raise AssertionError(kind)


_BROKEN_GEOMETRY_FILES = {
    "binary geometry file": (bytes(range(256)), r"geometry JSON is not valid JSON"),
    "geometry JSON nested too deeply": (b"[" * 100_000 + b"]" * 100_000, r"geometry JSON is not valid JSON: it is nested too deeply"),
    "geometry JSON with a 5000-digit number": (b'{"beam": 1' + b"0" * 5000 + b"}", r"geometry JSON is not valid JSON: Exceeds the limit"),
    "geometry JSON naming a key twice": (json.dumps(TINY_GEOMETRY)[:-1].encode() + b', "beam": "parallel"}',
                                         r"key\(s\) \['beam'\] given more than once"),
    "geometry of 100000 views": (json.dumps({**TINY_GEOMETRY, "angles_deg": list(range(100_000))}).encode(),
                                 r"100000 views of 16x16 pixels do not fit a projection stack"),
    "geometry with a NaN tilt": (json.dumps({**TINY_GEOMETRY, "tilt_deg": [float("nan"), 0.0, 0.0, 0.0]}).encode(),
                                 r"tilt_deg must hold finite tilts"),
}  # fmt: skip

_BROKEN_PROJECTION_META = {  # projections.json edits -> the line reconstruct refuses them with
    "text mu_water_per_mm": ({"mu_water_per_mm": "abc"}, r"mu_water_per_mm must be a number >= 0.001 and <= 1 .*got 'abc'"),
    "mu_water_per_mm of 1e30": ({"mu_water_per_mm": 1e30}, r"mu_water_per_mm must be a number >= 0.001 and <= 1"),
    "png_full_scale 0": ({"png_full_scale": 0}, r"png_full_scale must be a number > 0, got 0"),
    "singular volume_affine": ({"volume_affine": [[0.0] * 4] * 4}, r"volume_affine must be an invertible 4x4 matrix"),
}

_BROKEN_GENERATOR_EXTRAS = {
    "generator of silhouette width 0": ("silhouette_width_fraction", 0.0),
    "generator of NaN silhouette width": ("silhouette_width_fraction", float("nan")),
    "generator of text MAP residual": ("map_residual_mse", "x"),
    "generator of infinite reference": ("reference_max", float("inf")),
}

CORRUPT_CASES = [
    *_BROKEN_GEOMETRY_FILES,
    *_BROKEN_GENERATOR_EXTRAS,
    "generator missing a weight",
    "truncated stack", "corrupt projections.json", "negative projections", "all-zero projections", "empty checkpoint", "NaN-weight checkpoint",
    "corrupt PNG", "1x1 PNG", "constant PNG", "DX with RescaleSlope 0", "CT with zero spacing", "complex CT", "CT of 1e30 HU",
    "truncated CT", "DICOM series with a missing slice", "DICOM series with a gantry tilt", "source inside the volume", "projections whose source lies inside the grid",
    "projections whose geometry has no isocenter", "a learning rate that diverges", "volume outside the beam", "projections of 6 TB",
    *_BROKEN_PROJECTION_META, "generator extra not a mapping",
    "NaN latent covariance", "mask that is a text file", "DICOM series with zero PixelSpacing",
    "DICOM series without PixelSpacing", "DICOM series of two slice sizes",
    "MedNeRF folder with an unreadable view",
]  # fmt: skip


@pytest.mark.parametrize("kind", CORRUPT_CASES)
def test_corrupt_and_nonsense_inputs_are_refused(kind, inputs, tmp_path, capsys):
    argv, pattern = _write_corrupt(kind, inputs, tmp_path)
    _fails_with_one_line(argv, tmp_path, capsys, pattern)


def test_projections_of_metal_like_density_are_fitted_without_overflow(inputs, tmp_path):
    """Ten times the line integrals: an FDK start far above water's attenuation (once an overflow to NaN)."""
    folder = _copy_projections(inputs, tmp_path, "p")
    stack = nib.load(folder / "projections.nii.gz")
    nib.save(nib.Nifti1Image(10.0 * np.asarray(stack.dataobj), stack.affine), folder / "projections.nii.gz")
    main(["reconstruct", str(folder), "--out", str(tmp_path / "r.nii.gz"), *FIT, "--units", "mu"])
    volume = np.asarray(nib.load(tmp_path / "r.nii.gz").dataobj)
    assert np.isfinite(volume).all() and volume.max() > 10 * 0.02  # far denser than water


def _destinations(inputs: Path, work: Path) -> dict[str, tuple[list[str], str]]:
    ct, geo, proj, a_file = (str(inputs / n) for n in ("ct.nii.gz", "geometry.json", "proj", "a_file"))
    drr = ["drr", ct, "--geometry", geo]
    rec = ["reconstruct", proj, *FIT]
    return {
        "output parent is a file": (drr + ["--out", f"{a_file}/sub"], r"a_file is a file, not a folder"),
        "output folder is a file": (drr + ["--out", a_file], r"a_file is a file, not a folder"),
        "output file is a folder": (rec + ["--out", str(work)], r"is a folder; give a file name"),
        "output format unknown": (rec + ["--out", str(work / "r.vtk")], r"cannot write a volume as r.vtk: use .nii.gz"),
        "output name only a suffix": (rec + ["--out", str(work / ".nii.gz")], r"cannot write a volume as .nii.gz: the name is only a suffix"),
        "existing output": (drr + ["--out", proj], r"proj \(holding geometry.json, png, projections.json\) exists; pass --overwrite"),
        "work_dir is a file": (rec + ["--out", str(work / "r.nii.gz"), "--work_dir", a_file], r"--work_dir .* is a file"),
        "tensorboard_dir is a file": (rec + ["--out", str(work / "r.nii.gz"), "--tensorboard_dir", a_file],
                                      r"--tensorboard_dir .* is a file"),  # fmt: skip
    }


@pytest.mark.parametrize("case", list(_destinations(Path("."), Path("."))))
def test_bad_destinations_are_refused_before_any_work(case, inputs, tmp_path, capsys):
    argv, pattern = _destinations(inputs, tmp_path)[case]
    _fails_with_one_line(argv, tmp_path, capsys, pattern)


def test_full_disk_is_refused_up_front_and_mid_run(inputs, tmp_path, capsys, monkeypatch):
    drr = ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(inputs / "geometry.json"), "--out", str(tmp_path / "d")]
    real = shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    _fails_with_one_line(drr, tmp_path, capsys, r"not enough disk space .* 1000 B free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", real)

    def full_disk(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nib, "save", full_disk)
    _fails_with_one_line(drr, tmp_path, capsys, r"could not write .*d: No space left on device")


def test_an_output_that_would_replace_an_input_is_refused_even_with_overwrite(inputs, tmp_path, capsys):
    proj = _copy_projections(inputs, tmp_path, "p")
    rec = ["reconstruct", str(proj), *FIT, "--overwrite", "--out", str(proj / "projections.nii.gz")]
    _fails_with_one_line(rec, tmp_path, capsys, r"would replace the input .*p/projections.nii.gz; write elsewhere")
    (tmp_path / "d").mkdir()
    ct = _ct(tmp_path / "d" / "projections.nii.gz")  # a CT named as a DRR output
    drr = ["drr", str(ct), "--geometry", str(inputs / "geometry.json"), "--overwrite", "--out", str(tmp_path / "d")]
    _fails_with_one_line(drr, tmp_path, capsys, r"output .*d would replace the input .*d/projections.nii.gz")
    (tmp_path / "s" / "views").mkdir(parents=True)
    xray = shutil.copy(proj / "png" / "view_000.png", tmp_path / "s" / "views" / "view_000.png")
    out = tmp_path / "s" / "views" / ".."  # the folder itself: its views/ would be replaced
    single = ["single-view", str(xray), "--out", str(out), "--overwrite"]
    _fails_with_one_line(single, tmp_path, capsys, r"output .*s would replace the input .*s/views/view_000.png")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_virtual_file_system_is_refused(inputs, tmp_path, capsys):
    argv = ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(inputs / "geometry.json"), "--out", "/proc/gnerf-out"]
    _fails_with_one_line(argv, tmp_path, capsys, r"/proc is a virtual file system, not storage")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_refused(inputs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(inputs / "geometry.json"), "--out", str(locked / "d")]
        _fails_with_one_line(argv, tmp_path, capsys, r"locked is not writable")
    finally:
        locked.chmod(0o700)


def test_overwrite_replaces_an_existing_output(inputs, tmp_path, capsys):
    out = _copy_projections(inputs, tmp_path, "d")
    (out / "keep.txt").write_text("the user's own file")
    argv = ["drr", str(inputs / "ct.nii.gz"), "--geometry", str(inputs / "geometry.json"), "--views", "2", "--out", str(out)]
    _fails_with_one_line(argv, tmp_path, capsys, r"exists; pass --overwrite")
    main([*argv, "--overwrite"])
    assert load_geometry(out / "geometry.json").num_views == 2 and (out / "keep.txt").is_file()


def test_resume_refuses_another_patients_checkpoint(inputs, tmp_path, capsys):
    work = tmp_path / "work"
    main(["reconstruct", str(inputs / "proj"), "--out", str(tmp_path / "a.nii.gz"), "--work_dir", str(work), *FIT])
    other = _copy_projections(inputs, tmp_path, "other")
    stack = nib.load(other / "projections.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(stack.dataobj)[::-1].copy(), stack.affine), other / "projections.nii.gz")
    argv = ["reconstruct", str(other), "--out", str(tmp_path / "b.nii.gz"), "--work_dir", str(work), *FIT]
    _fails_with_one_line(argv, tmp_path, capsys, r"holds a checkpoint of another run \(different inputs\)")
    main([*argv, "--overwrite"])  # starts afresh
    assert (tmp_path / "b.nii.gz").is_file()


def test_gray_alpha_png_reads_as_its_gray_level(tmp_path):
    gray = np.arange(32, dtype=np.uint8)[None].repeat(8, 0) * 8
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA").save(tmp_path / "la.png")
    assert np.allclose(read_png16(tmp_path / "la.png", 255.0), gray)


# ------------------------------------------------------------------ fuzzing
_FUZZ_VALUES = [0, -1, 1, 2, 16, 2.5, 1e12, -1e12, float("nan"), "abc", None, [], [1], [16, 16], [1, 2, 3], {}, True]


def _fuzzed_geometry(rng: random.Random) -> dict:
    geometry = json.loads(json.dumps(TINY_GEOMETRY))
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*TINY_GEOMETRY, "isocenter_mm", "rotation_axis", "source_direction", "tilt_deg", "bogus"])
        if rng.random() < 0.15:
            geometry.pop(key, None)
        else:
            geometry[key] = rng.choice(_FUZZ_VALUES + [["cone"], "parallel", [0.0, float("inf")]])
    return geometry


def _fuzzed_nifti(rng: random.Random, source: bytes) -> bytes:
    """The tiny CT's header with 1-3 fields overwritten by random numbers (uncompressed .nii)."""
    raw = bytearray(source)
    fields = [(40, "h", 8), (70, "h", 1), (72, "h", 1), (76, "f", 8), (108, "f", 1), (252, "h", 2), (280, "f", 12)]
    for _ in range(rng.randint(1, 3)):
        offset, code, count = rng.choice(fields)
        index = rng.randrange(count)
        value = rng.choice([0, -1, 1, 3, 64, 32767, -32768, 1e-30, 1e30, float("nan")])
        dtype = np.int16 if code == "h" else np.float32
        with np.errstate(all="ignore"):
            packed = np.array([value]).astype(dtype).tobytes()
        size = np.dtype(dtype).itemsize
        raw[offset + index * size : offset + (index + 1) * size] = packed
    return bytes(raw)


def _fuzz_once(argv: list[str], out: Path, work: Path, capsys) -> None:
    before = _snapshot(work)
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2), (argv, err)
    if code == 2:
        assert err[-1].startswith("monai-gnerf: error: ") and not any("Traceback" in line for line in err), err
        assert _snapshot(work) == before, (argv, "partial output")
    shutil.rmtree(out, ignore_errors=True)


def test_fuzzed_geometries_and_nifti_headers_give_a_result_or_one_line(inputs, tmp_path, capsys):
    rng = random.Random(1234)
    ct = inputs / "ct.nii.gz"
    nii = tmp_path / "ct.nii"
    nib.save(nib.load(ct), nii)
    source = nii.read_bytes()
    out = tmp_path / "out"
    for _ in range(300):
        (tmp_path / "g.json").write_text(json.dumps(_fuzzed_geometry(rng)))
        _fuzz_once(["drr", str(ct), "--geometry", str(tmp_path / "g.json"), "--out", str(out)], out, tmp_path, capsys)
    for _ in range(200):
        nii.write_bytes(_fuzzed_nifti(rng, source))
        argv = ["drr", str(nii), "--geometry", str(inputs / "geometry.json"), "--out", str(out)]
        _fuzz_once(argv, out, tmp_path, capsys)
