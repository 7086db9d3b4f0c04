from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_gnerf.apps.cli import main
from monai_gnerf.data import example_ct_path
from monai_gnerf.engines import ReconstructionConfig
from monai_gnerf.geometry import load_geometry, volume_center_mm
from monai_gnerf.io import load_ct, load_projections, read_png16, save_projections, save_volume
from monai_gnerf.networks import read_generator_header
from monai_gnerf.physics import hu_to_attenuation
from monai_gnerf.render import render_drr


def test_drr_command_writes_a_projection_set(tmp_path, capsys):
    out = tmp_path / "drr"
    main(["drr", str(example_ct_path()), "--geometry", "x2ct_biplanar", "--out", str(out)])
    assert f"wrote DRRs to {out}" in capsys.readouterr().out
    projections, geometry = load_projections(out)
    ct = load_ct(example_ct_path())
    expected = render_drr(hu_to_attenuation(ct), geometry)
    assert torch.allclose(projections.as_tensor(), expected, atol=1e-5)
    png = read_png16(out / "png" / "view_001.png", projections.meta["png_full_scale"])
    assert np.abs(png - expected[1].numpy()).max() <= projections.meta["png_full_scale"] / 65535
    stack = nib.load(out / "projections.nii.gz")
    assert stack.shape == (128, 128, 2) and stack.header.get_zooms()[:2] == pytest.approx((500 / 128, 500 / 128))


def test_user_errors_exit_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["drr", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monai-gnerf: error: CT not found") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_console_script_help_and_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"beam": "cone", "angles_deg": [0], "detector_shape": [4, 4], "pixel_spacing_mm": [1, 1]}')
    done = subprocess.run(
        [sys.executable, "-m", "monai_gnerf.apps.cli", "drr", str(example_ct_path()), "--geometry", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "source_to_isocenter_mm" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "monai_gnerf.apps.cli", "drr", "--help"], capture_output=True, text=True,
        env={**os.environ, "PAGER": "cat"},
    )  # fmt: skip
    shown = helped.stdout + helped.stderr  # fire writes help to stderr when not on a terminal
    assert helped.returncode == 0 and "--geometry" in shown and "step_mm" in shown


def test_the_command_list_names_every_command_and_a_closed_pipe_ends_quietly():
    cli = [sys.executable, "-m", "monai_gnerf.apps.cli"]
    helped = subprocess.run([*cli, "--help"], capture_output=True, text=True, env={**os.environ, "PAGER": "cat"})
    listed = {line.strip() for line in (helped.stdout + helped.stderr).splitlines()}
    assert {"demo", "drr", "evaluate", "geometry", "presets", "reconstruct", "single_view", "train_prior"} <= listed
    reader_gone = subprocess.Popen([*cli, "presets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # as `monai-gnerf presets | head -0` does, before the command prints
    _, errors = reader_gone.communicate()
    assert reader_gone.returncode == 141 and errors == b""


def box_corners(affine, shape):
    """World positions of the two extreme corners of a grid's voxel box."""
    return [affine @ np.array([*(np.array(index) - 0.5), 1.0]) for index in ((0, 0, 0), tuple(shape))]


def test_reconstruct_and_demo_commands(tmp_path, capsys):
    drr = tmp_path / "drr"
    main(["drr", "example", "--geometry", "chest_cbct", "--views", "8", "--out", str(drr)])
    main(["reconstruct", str(drr), "--out", str(tmp_path / "vol.nii.gz"), "--method", "fdk", "--spacing_mm", "5"])
    volume = nib.load(tmp_path / "vol.nii.gz")
    ct = load_ct(example_ct_path())
    for got, want in zip(box_corners(volume.affine, volume.shape), box_corners(ct.affine.numpy(), ct.shape)):
        assert np.allclose(got, want, atol=1e-3)  # same field of view as the CT: it overlays
    main(["demo", "--out", str(tmp_path / "demo"), "--views", "6", "--budget_s", "2", "--spacing_mm", "6",
          "--single_view_budget_s", "3"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "fdk   3D PSNR" in printed and "grid  3D PSNR" in printed and "copy-the-input baseline" in printed
    for name in ("truth.nii.gz", "fdk.nii.gz", "grid.nii.gz", "figure.png", "metrics.json"):
        assert (tmp_path / "demo" / name).is_file()
    single = tmp_path / "demo" / "single_view"
    views, _ = load_projections(single / "views")
    assert views.shape[0] == 72 and (single / "figure.png").is_file()
    volume = nib.load(single / "volume.nii.gz")
    centre = volume.affine @ np.array([*(np.array(volume.shape) - 1) / 2.0, 1.0])
    assert np.allclose(centre[:3], volume_center_mm(ct.affine, ct.shape).numpy(), atol=1e-3)  # overlays the CT


def test_an_interrupted_demo_leaves_no_output_folder(tmp_path, monkeypatch):
    """The sparse-view half has written its files when the single-view half is interrupted: all go."""
    demo_module = importlib.import_module("monai_gnerf.apps.demo")  # the package exports the function demo

    def interrupted(*_args, **_kwargs):
        assert (tmp_path / "demo" / "figure.png").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "example_single_view", interrupted)
    fit = ReconstructionConfig(budget_s=1.0)
    config = demo_module.MainDemoConfig(sparse_view=demo_module.DemoConfig(views=4, spacing_mm=8.0, fit=fit))
    with pytest.raises(KeyboardInterrupt):
        demo_module.demo(tmp_path / "demo", config)
    assert list(tmp_path.iterdir()) == []


def test_train_prior_then_single_view_commands(tmp_path, capsys):
    prior = tmp_path / "prior"
    main(["train-prior", "--out", str(prior), "--detector_size", "32", "--subjects", "2", "--max_iterations", "4",
          "--batch_size", "2", "--patch_size", "8", "--num_samples", "8"])  # fmt: skip
    assert (prior / "generator.pt").is_file() and (prior / "checkpoints" / "samples.png").is_file()
    drr = tmp_path / "drr"
    main(["drr", "example", "--geometry", "mednerf_chest", "--views", "2", "--out", str(drr)])
    out = tmp_path / "single"
    main(["single-view", str(drr / "png" / "view_000.png"), "--checkpoint", str(prior / "generator.pt"),
          "--out", str(out), "--latent_iterations", "2", "--finetune_iterations", "2", "--restarts", "1",
          "--volume_size", "16", "--views", "72"])  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    views = nib.load(out / "views" / "projections.nii.gz")
    assert views.shape == (32, 32, 72) and len(list((out / "views" / "png").glob("*.png"))) == 72
    volume = nib.load(out / "volume.nii.gz")
    assert volume.shape == (16, 16, 16) and np.isfinite(volume.get_fdata()).all()
    spacing = 2 * 200.0 / 16  # the generator's scene cube (extent 200 mm) on 16 voxels
    assert np.allclose(volume.affine[:3, :3], np.eye(3) * spacing)
    assert np.allclose(volume.affine[:3, 3], -(16 - 1) / 2 * spacing)  # centred on the isocenter
    assert (out / "views.gif").stat().st_size > 0
    fit = json.loads((out / "fit.json").read_text())
    residual = read_generator_header(prior / "generator.pt").extra["map_residual_mse"]  # measured by train-prior
    assert fit["discrepancy_target_mse"] == pytest.approx(residual) and 0 < residual < 1  # discrepancy 1.0 x residual
    assert fit["input_mse"] > 0


def test_single_view_with_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        main(["single-view", str(image), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"monai-gnerf: error: checkpoint not found: {tmp_path / 'none.pt'}"
    assert not (tmp_path / "o").exists()


def test_single_view_of_a_cr_with_zero_pixel_spacing_warns_and_gives_a_result(tmp_path, caplog):
    from dicom_utils import write_dx

    ct = load_ct(example_ct_path())
    geometry = load_geometry("mednerf_chest").with_detector_shape(96, 96).with_uniform_angles(1)
    drr = render_drr(hu_to_attenuation(ct), geometry)[0].numpy()
    pixels = np.round(drr / drr.max() * 4000).astype(np.uint16)  # a DX-like 12-bit image of the CT
    study = "1.2.826.0.1.3680043.8.498.4242"
    write_dx(tmp_path / "cr.dcm", pixels, PixelSpacing=[0, 0], Modality="CR", PatientID="CR-7", StudyInstanceUID=study)
    out = tmp_path / "single"
    main(["single-view", str(tmp_path / "cr.dcm"), "--out", str(out), "--latent_iterations", "2",
          "--finetune_iterations", "1", "--restarts", "1", "--volume_size", "8", "--views", "4",
          "--nrrd", "True", "--dicom", "True"])  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("monai_gnerf")]
    assert any("PixelSpacing [0.0, 0.0] is not a pixel spacing" in w for w in warnings)
    assert any("no pixel spacing; estimated" in w for w in warnings)
    assert (out / "volume.nii.gz").is_file() and (out / "views" / "projections.nii.gz").is_file()
    nifti, nrrd = load_ct(out / "volume.nii.gz"), load_ct(out / "volume.nrrd")  # NRRD beside NIfTI: the same volume
    assert torch.equal(nifti.as_tensor(), nrrd.as_tensor()) and torch.allclose(nifti.affine, nrrd.affine, atol=1e-5)
    import pydicom

    series = [pydicom.dcmread(f) for f in sorted((out / "volume_dicom").glob("*.dcm"))]
    assert len(series) == 8 and {(h.PatientID, h.StudyInstanceUID, h.Modality) for h in series} == {("CR-7", study, "CT")}


def test_reconstruct_writes_nrrd_and_a_dicom_series_in_the_source_study(tmp_path):
    """A DICOM CT -> DRRs -> FDK with --dicom_dir: the series joins the source's patient, study and
    frame of reference with its own series UID, and holds the same HU as the NRRD volume."""
    import pydicom
    from dicom_utils import write_ct_series

    z, y, x = np.meshgrid(np.arange(12), np.arange(16), np.arange(16), indexing="ij")
    hu = np.where((x - 7.5) ** 2 + (y - 7.5) ** 2 < 36, 400.0, -1000.0)  # a cylinder, (slices, rows, cols)
    source = write_ct_series(tmp_path / "ct", hu, spacing_mm=(4.0, 4.0, 4.0), extra_tags={"PatientName": "Doe^Jane"})
    first = pydicom.dcmread(source[0])
    geometry = tmp_path / "geometry.json"
    load_geometry("chest_cbct").with_detector_shape(32, 32).with_uniform_angles(8).to_json(geometry)
    main(["drr", str(tmp_path / "ct"), "--out", str(tmp_path / "drr"), "--geometry", str(geometry)])
    nrrd, dicom_dir = tmp_path / "recon.nrrd", tmp_path / "recon_dicom"
    main(["reconstruct", str(tmp_path / "drr"), "--out", str(nrrd), "--method", "fdk", "--spacing_mm", "8",
          "--dicom_dir", str(dicom_dir)])  # fmt: skip
    assert (tmp_path / "recon.png").is_file()
    files = sorted(dicom_dir.glob("*.dcm"))
    headers = [pydicom.dcmread(f) for f in files]
    for key in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert all(str(h.get(key)) == str(first.get(key)) for h in headers), key
    assert {h.SeriesInstanceUID for h in headers} != {first.SeriesInstanceUID} and len({h.SeriesInstanceUID for h in headers}) == 1
    assert all(h.Modality == "CT" and h.SOPClassUID == pydicom.uid.CTImageStorage for h in headers)
    volume, series = load_ct(nrrd), load_ct(dicom_dir)
    assert volume.shape == series.shape and len(files) == volume.shape[2]
    flip = [axis for axis in range(3) if float(volume.affine[axis, axis]) * float(series.affine[axis, axis]) < 0]
    aligned = series.as_tensor().flip(flip) if flip else series.as_tensor()
    assert torch.equal(aligned, volume.as_tensor().round().clamp(-32768, 32767))  # the same HU voxel for voxel
    centre = torch.tensor([(n - 1) / 2.0 for n in volume.shape] + [1.0], dtype=torch.float64)
    assert torch.allclose(series.affine.double() @ centre, volume.affine.double() @ centre, atol=1e-3)  # same place


def test_evaluate_command_scores_a_known_offset_in_3d_and_2d(tmp_path, capsys):
    ct = load_ct(example_ct_path())
    reference = ct.as_tensor().clamp(min=-1000.0)  # the convention clips at air; no clipping left to do
    offset_hu = 20.0
    save_volume(tmp_path / "recon.nii.gz", reference + offset_hu, ct.affine)
    drr = tmp_path / "drr"
    main(["drr", "example", "--geometry", "x2ct_biplanar", "--out", str(drr)])
    views, geometry = load_projections(drr)
    view_range = float(views.max() - views.min())
    save_projections(tmp_path / "shifted", views.as_tensor() + 0.01 * view_range, geometry)
    capsys.readouterr()
    main(["evaluate", "--out", str(tmp_path / "scores"), "--reconstructions", str(tmp_path / "recon.nii.gz"),
          "--references", str(example_ct_path()), "--projections", str(tmp_path / "shifted"),
          "--reference_projections", str(drr)])  # fmt: skip
    summary = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    hu_range = float(reference.max() - reference.min())
    # a uniform offset d on data of range R: PSNR = 20 log10(R / d) with data range 1 after normalization
    assert summary["volumes"]["mean"]["psnr_db"] == pytest.approx(20 * np.log10(hu_range / offset_hu), abs=1e-3)
    assert summary["projections"]["mean"]["psnr_db"] == pytest.approx(40.0, abs=1e-3)
    assert summary["projections"]["mean"]["gmsd"] == pytest.approx(0.0, abs=1e-6)  # an offset has no gradient
    printed = capsys.readouterr().out
    assert "volumes: 1 case(s), mean psnr_db" in printed and f"wrote {tmp_path / 'scores' / 'metrics.json'}" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evalu"], "unknown command 'evalu'; commands: demo, drr, evaluate, geometry, presets, reconstruct, single-view, train-prior."),
        (["presets", "--foo"], "unknown option --foo; this command takes no options."),
        (["presets", "foo"], "presets takes no arguments; remove 'foo'."),
        (["geometry"], "geometry needs NAME."),
        (["evaluate", "--reconstructions", "{bad}", "--references", "{ct}"], "evaluate needs --out DIR"),
        (["evaluate", "--reconstructions", "{bad}", "--references", "{ct}", "--out", "{out}"], "could not read CT"),
        (["evaluate", "--reconstructions", "{ct}", "--references", "{ct}", "--out", "{bad}"], "is a file, not a folder"),
        (["train-prior", "--out", "{out}", "--data", "{bad}", "--pca_init", "False", "--volume_weight", "0",
          "--subjects", "2", "--calibration_subjects", "0", "--detector_size", "16"], "could not read CT"),
        (["drr", "{ct}", "--out", ""], "output is empty; give a folder name."),
        (["train-prior", "--out", "{out}", "--data", "{empty}"], "empty; it needs CT files, DICOM series folders"),
        (["evaluate", "--reconstructions", "{ct}", "--references", "{air}", "--out", "{out}"],
         "the reference volume (clipped at air) is constant (-1000 everywhere)"),
        (["drr", "--out", "{out}"], "missing CT: give it first, before the options (see --help)."),
        (["reconstruct", "1e3", "--out", "{out}"], "read the path you gave as the number 1000.0; write it with ./ in front."),
        (["single-view", "{ct}", "--checkpoint", "{bad}", "--out", "{out}"], "it is not a file written by torch.save."),
    ],
)  # fmt: skip
def test_unknown_commands_and_unreadable_volumes_are_one_line(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a volume")
    ct = load_ct(example_ct_path())
    save_volume(tmp_path / "air.nii.gz", torch.full(ct.shape, -1024.0), ct.affine)
    out = tmp_path / "scores"
    (tmp_path / "empty").mkdir()
    argv = [a.format(bad=bad, ct=example_ct_path(), air=tmp_path / "air.nii.gz", empty=tmp_path / "empty", out=out)
            for a in argv]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monai-gnerf: error: ") and message in err and "\n" not in err
    assert not out.exists()


def _small_projection_folder(folder):
    geometry = load_geometry("mednerf_chest").with_detector_shape(16, 16).with_uniform_angles(2).resolved((0, 0, 0))
    save_projections(folder, torch.rand(2, 16, 16), geometry)
    return folder


def test_a_nifti_header_repair_is_reported_once(tmp_path):
    image = nib.Nifti1Image(np.full((16, 16, 16), -1000, np.int16), np.diag([8.0, 8.0, 8.0, 1.0]))
    image.header["pixdim"][0] = 0  # qfac 0: nibabel repairs it to 1 and says so
    nib.save(image, tmp_path / "ct.nii.gz")
    done = subprocess.run(
        [sys.executable, "-m", "monai_gnerf.apps.cli", "--threads", "1", "drr", str(tmp_path / "ct.nii.gz"),
         "--out", str(tmp_path / "d"), "--views", "2"], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("pixdim[0] (qfac) should be 1") == 1


def test_a_malformed_projection_folder_is_one_line_without_monai_noise(tmp_path):
    stack_2d = _small_projection_folder(tmp_path / "p2d")
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), stack_2d / "projections.nii.gz")
    mixed = _small_projection_folder(tmp_path / "mixed")
    (mixed / "projections.nii.gz").unlink()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "png" / "view_001.png")
    cases = (
        (stack_2d, f"{stack_2d / 'projections.nii.gz'} must be a 3D stack (cols, rows, views), got 2D (16, 16)."),
        (mixed, f"{mixed / 'png' / 'view_001.png'} has (8, 8) pixels but geometry.json says (16, 16)."),
    )
    for folder, message in cases:
        out = tmp_path / f"{folder.name}.nii.gz"
        done = subprocess.run(
            [sys.executable, "-m", "monai_gnerf.apps.cli", "--threads", "1", "reconstruct", str(folder),
             "--out", str(out), "--method", "fdk"], capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"monai-gnerf: error: {message}"]  # MONAI's reader noise too
        assert not out.exists()


def test_numeric_paths_stay_paths_and_flags_take_no_words(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _small_projection_folder(tmp_path / "p")
    main(["evaluate", "--out", "2024", "--projections", str(folder), "--reference_projections", str(folder)])
    assert (tmp_path / "2024" / "metrics.json").is_file()  # fire reads 2024 as a number; it is a folder name
    main(["drr", str(example_ct_path()), "--geometry", "x2ct_biplanar", "--out", "7"])
    assert load_projections(tmp_path / "7")[0].shape == (2, 128, 128)
    capsys.readouterr()
    with pytest.raises(SystemExit):  # fire passes "false" as text: it means False, so "7" is kept
        main(["drr", str(example_ct_path()), "--geometry", "x2ct_biplanar", "--out", "7", "--overwrite=false"])
    assert "exists; pass --overwrite to replace it." in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["drr", str(example_ct_path()), "--out", "o", "--overwrite", "maybe"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "monai-gnerf: error: --overwrite is a flag: true or false, not 'maybe'."
    )
    assert not (tmp_path / "o").exists()


def test_png_views_load_in_numeric_order_and_an_empty_mask_is_refused(tmp_path, capsys):
    folder = _small_projection_folder(tmp_path / "p12")
    geometry = load_geometry("mednerf_chest").with_detector_shape(16, 16).with_uniform_angles(12).resolved((0, 0, 0))
    views = torch.arange(12, dtype=torch.float32)[:, None, None].expand(12, 16, 16) / 4.0
    save_projections(folder, views, geometry)
    (folder / "projections.nii.gz").unlink()
    for index, png in enumerate(sorted((folder / "png").glob("*.png"))):
        png.rename(png.with_name(f"view_{index}.png"))  # view_0 ... view_11: text order puts view_10 second
    loaded, _ = load_projections(folder)
    assert torch.allclose(loaded.as_tensor()[:, 0, 0], views[:, 0, 0], atol=1e-3)
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), empty)
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", str(folder), "--out", str(tmp_path / "r.nii.gz"), "--method", "fdk", "--mask", str(empty)])
    assert exit_info.value.code == 2
    assert "has no voxel > 0 on the reconstruction grid" in capsys.readouterr().err
    assert not (tmp_path / "r.nii.gz").exists()


def test_a_ctrl_c_while_the_command_loads_its_libraries_is_one_line(monkeypatch, capsys):
    import monai_gnerf

    def interrupted_import(name, *args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises while torch and MONAI load

    monkeypatch.setattr(monai_gnerf.importlib, "import_module", interrupted_import)
    with pytest.raises(SystemExit) as exit_info:
        monai_gnerf.main()
    assert exit_info.value.code == 130 and capsys.readouterr().err == "monai-gnerf: interrupted\n"
