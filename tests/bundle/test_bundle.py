"""The MONAI bundle in ``bundle/``: every config end to end, through the CLI and in-process.

Tiny settings keep this file fast: the example CT area-averaged to 8 mm (45x45x42), a 48x48
detector of 12.5 mm (8.3 mm pixels at the isocenter), 6 views, seconds of training; the generative
prior on a 32x32 detector, 2 phantom subjects, 8x8 patches, 8 samples per ray, 4 iterations.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata
from PIL import Image

import monai_gnerf
from monai_gnerf.data import example_ct_path
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import grid_for_spacing, load_geometry, resample_area, volume_center_mm
from monai_gnerf.io import load_ct, load_projections, load_xray, save_volume
from monai_gnerf.metrics import (
    RandomConvFeatures,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
    reference_on_grid,
    volume_metrics,
)
from monai_gnerf.networks import load_generator
from monai_gnerf.networks.generator import GeneratorConfig
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
sys.path.insert(0, str(BUNDLE))  # the bundle's own code, as MONAI imports it: ``scripts``
import scripts as bundle_scripts  # noqa: E402

CONFIGS = BUNDLE / "configs"
MONAI_SCHEMA = Path(os.environ.get("MONAI_BUNDLE_META_SCHEMA", "/nonexistent"))  # MONAI's own schema, if kept locally
VIEWS = 6


class BackgroundRun:
    """A command started in the background in its own session, output to files (so a full pipe never
    stalls it); :meth:`result` waits for it, and kills it with all its children after ``timeout``."""

    def __init__(self, command: list[str], log_dir: Path, timeout: float = 300, cwd: Path | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._logs = log_dir / "stdout.txt", log_dir / "stderr.txt"
        self._timeout = timeout
        with self._logs[0].open("w") as out, self._logs[1].open("w") as err:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=err, text=True, cwd=cwd, start_new_session=True
            )

    def result(self) -> subprocess.CompletedProcess:
        try:
            returncode = self._process.wait(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            raise
        stdout, stderr = (path.read_text() for path in self._logs)
        return subprocess.CompletedProcess(self._process.args, returncode, stdout, stderr)


class BundleRun(BackgroundRun):
    """``python -m monai.bundle run --config_file bundle/configs/CONFIG --key value ...`` in the background.

    ``config`` may be a list of configs (merged in order); ``launcher`` holds Python arguments that run
    before ``-m monai.bundle`` (e.g. ``-m torch.distributed.run --nproc_per_node=2``).
    """

    def __init__(
        self, config: str | list[str], log_dir: Path, launcher: tuple[str, ...] = (), timeout: float = 300, **overrides
    ) -> None:
        files = [str(CONFIGS / name) for name in ([config] if isinstance(config, str) else config)]
        config_file = files[0] if len(files) == 1 else repr(files)
        command = [sys.executable, *launcher, "-m", "monai.bundle", "run", "--config_file", config_file]
        for key, value in overrides.items():
            command += [f"--{key}", str(value)]
        super().__init__(command, log_dir, timeout)


def bundle_cli(config: str, log_dir: Path, **overrides) -> subprocess.CompletedProcess:
    """Run a config through the CLI and wait for it."""
    return BundleRun(config, log_dir, **overrides).result()


def bundle_in_process(config: str, **overrides) -> list:
    """Run a config with ``monai.bundle.ConfigWorkflow`` in this process; returns the run list's results."""
    overrides.setdefault("bundle_root", str(BUNDLE))
    workflow = ConfigWorkflow(config_file=str(CONFIGS / config), workflow_type=None, **overrides)
    workflow.initialize()
    result = workflow.run()
    workflow.finalize()
    return result


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """ConfigWorkflow applies configs/logging.conf to the root logger; undo it after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two small CTs (ct_a: the example CT at 8 mm, ct_b: its mirror image) and a tiny geometry."""
    root = tmp_path_factory.mktemp("bundle")
    ct = load_ct(example_ct_path())
    shape, affine = grid_for_spacing(ct.shape, ct.affine, 8.0)
    small = resample_area(ct.as_tensor(), shape)
    cts = root / "cts"
    save_volume(cts / "ct_a.nii.gz", small, affine)
    save_volume(cts / "ct_b.nii.gz", torch.flip(small, [0]), affine)
    geometry = replace(load_geometry("chest_cbct"), detector_shape=(48, 48), pixel_spacing_mm=(12.5, 12.5), name="tiny")
    geometry_path = root / "tiny_geometry.json"
    geometry.to_json(geometry_path)
    return {
        "root": root,
        "cts": cts,
        "ct_a": cts / "ct_a.nii.gz",
        "ct_b": cts / "ct_b.nii.gz",
        "geometry": geometry_path,
    }


@pytest.fixture(scope="module")
def wrong_path_cli(data):
    """drr.json through the CLI on a missing CT, started in the background early."""
    missing, out = data["root"] / "no_such_ct.nii.gz", data["root"] / "wrong_path_out"
    return BundleRun("drr.json", data["root"] / "logs_wrong_path", dataset_dir=missing, output_dir=out), missing, out


@pytest.fixture(scope="module")
def drr_single(data, wrong_path_cli):
    """drr.json through the CLI on one CT file."""
    out = data["root"] / "drr_single"
    proc = bundle_cli("drr.json", data["root"] / "logs_drr", dataset_dir=data["ct_a"], output_dir=out,
                      device="cpu", **{"drr#geometry": data["geometry"], "drr#views": VIEWS})  # fmt: skip
    return proc, out


@pytest.fixture(scope="module")
def recon_cli(data, drr_single):
    """reconstruct.json through the CLI with exactly the 3D Slicer extension's arguments (background)."""
    out = data["root"] / "recon_grid"
    run = BundleRun("reconstruct.json", data["root"] / "logs_recon", projections_dir=drr_single[1] / "projections",
                    output_dir=out, device="cpu", bundle_root=BUNDLE,
                    **{"fit#method": "grid", "fit#budget_s": 3, "sparse_view#spacing_mm": 12})  # fmt: skip
    return run, out


@pytest.fixture(scope="module")
def drr_folder(data, recon_cli):
    """drr.json in-process on a folder of two CTs (while the CLI reconstruction runs)."""
    out = data["root"] / "drr_folder"
    bundle_in_process("drr.json", dataset_dir=str(data["cts"]), output_dir=str(out),
                      **{"drr#geometry": str(data["geometry"]), "drr#views": VIEWS})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def recon_fdk(data, drr_single):
    """reconstruct.json in-process, FDK, on the source grid."""
    out = data["root"] / "recon_fdk"
    bundle_in_process("reconstruct.json", projections_dir=str(drr_single[1] / "projections"),
                      output_dir=str(out), **{"fit#method": "fdk"})  # fmt: skip
    return out / "reconstruction.nii.gz"


def _psnr_3d(prediction_hu: np.ndarray, reference_hu: np.ndarray) -> float:
    """Independent 3D PSNR: clip at air, min-max with the reference's range, data range 1."""
    ref = np.maximum(reference_hu.astype(np.float64), -1000.0)
    low, high = ref.min(), ref.max()
    est = np.clip((np.maximum(prediction_hu.astype(np.float64), -1000.0) - low) / (high - low), 0, 1)
    return float(10 * np.log10(1.0 / np.mean((est - (ref - low) / (high - low)) ** 2)))


def _psnr_2d_mean(prediction_dir: Path, reference_dir: Path) -> float:
    """Independent 2D PSNR: stacks min-max normalized with the reference's range, mean over views."""
    pred = np.asarray(nib.load(prediction_dir / "projections.nii.gz").dataobj, dtype=np.float64)
    ref = np.asarray(nib.load(reference_dir / "projections.nii.gz").dataobj, dtype=np.float64)
    low, high = ref.min(), ref.max()
    est, truth = np.clip((pred - low) / (high - low), 0, 1), (ref - low) / (high - low)
    mse = ((est - truth) ** 2).mean(axis=(0, 1))  # NIfTI layout (cols, rows, views)
    return float(np.mean(10 * np.log10(1.0 / mse)))


def _normalized_views(prediction_dir: Path, reference_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Both stacks ``(views, rows, cols)`` min-max normalized with the reference's range (prediction clipped)."""
    pred = np.asarray(nib.load(prediction_dir / "projections.nii.gz").dataobj, dtype=np.float64).transpose(2, 1, 0)
    ref = np.asarray(nib.load(reference_dir / "projections.nii.gz").dataobj, dtype=np.float64).transpose(2, 1, 0)
    low, high = ref.min(), ref.max()
    return torch.from_numpy(np.clip((pred - low) / (high - low), 0, 1)).float(), torch.from_numpy(
        (ref - low) / (high - low)
    ).float()


def _read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = path.read_text().splitlines()[0].split(",")
    return header, {row["case"]: row for row in rows}


# ---------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    "schema",
    [
        CONFIGS / "meta_schema.json",
        pytest.param(
            MONAI_SCHEMA,
            marks=pytest.mark.skipif(not MONAI_SCHEMA.is_file(), reason="MONAI_BUNDLE_META_SCHEMA names no file"),
        ),
    ],
    ids=["bundle_schema", "monai_schema"],
)
def test_metadata_verifies_and_broken_metadata_does_not(schema, tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert meta["required_packages_version"]["monai-gnerf"] == monai_gnerf.__version__
    # MONAI 1.6 parses optional_packages_version as the old name of the required list (replacing it)
    assert meta["optional_packages_version"] == meta["required_packages_version"]
    prior = meta["network_data_format"]
    assert prior["inputs"]["image"]["spatial_shape"] == [64, 64] and prior["inputs"]["image"]["num_channels"] == 1
    assert prior["outputs"]["views"]["num_channels"] == 72 and prior["outputs"]["volume"]["format"] == "hounsfield"
    for key, bad_value in (("network_data_format", None), ("authors", ["a", "b"]), ("required_packages_version", "x")):
        broken = dict(meta)
        if bad_value is None:
            del broken[key]
        else:
            broken[key] = bad_value
        path = tmp_path / f"broken_{key}.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="Failed validating"):
            verify_metadata(meta_file=str(path), filepath=str(schema))


def test_metadata_eval_metrics_are_the_benchmark_figures():
    """eval_metrics quote benchmarks/results/*.json (rounded), so the bundle claims what was measured."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    metrics = json.loads((CONFIGS / "metadata.json").read_text())["eval_metrics"]
    sparse = {(row["views"], row["method"]): row for row in json.loads((results / "sparse_view.json").read_text())["rows"]
              if row["tool"] == "monai-gnerf"}  # fmt: skip
    single = json.loads((results / "single_view.json").read_text())["summary"]
    spec = importlib.util.spec_from_file_location("single_view_benchmark", results.parent / "single_view.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)  # its row labels, written once there
    labels = {"population_mean": "population mean", "pca_fit": "PCA fit",
              "grid_prior_map_only": f"grid prior + {benchmark.MAP_ONLY_LABEL}",
              "grid_prior_default": f"grid prior + {benchmark.DEFAULT_LABEL}"}  # fmt: skip
    checked = 0
    for key, value in metrics.items():
        if match := re.fullmatch(r"sparse_view_(\d+)_views_(\w+?)_(psnr_3d|ssim_3d)(_db)?", key):
            figure = sparse[(int(match[1]), match[2])][match[3]]
        elif match := re.fullmatch(r"single_view_(\w+?)_(psnr_2d|psnr_3d)_db", key):
            figure = single[labels[match[1]]][match[2]]
        else:
            assert key.endswith("note"), key
            continue
        assert value == pytest.approx(figure, abs=0.006), key
        checked += 1
    assert checked >= 14


def test_configs_define_the_contract_overrides():
    """MONAI accepts unknown overrides silently, so a renamed key would break callers without an error."""
    contract = {
        "drr.json": {"dataset_dir", "output_dir", "device", "drr"},
        "reconstruct.json": {"projections_dir", "output_dir", "device", "work_dir", "tensorboard_dir"}
        | {"example", "fit", "sparse_view"},
        "evaluate.json": {"reconstructions", "references", "projections", "reference_projections", "output_dir"}
        | {"metrics_3d", "metrics_2d", "test_set_metrics_2d"},
        "train.json": {"dataset_dir", "output_dir", "device", "tensorboard_dir", "network_def", "discriminator_def"}
        | {"prior", "job", "train"},
        "inference.json": {"xray", "checkpoint", "output_dir", "device", "fit", "single_view", "network_def"},
        "multi_gpu_train.json": {"backend", "device", "initialize", "finalize"},
    }
    for name, keys in contract.items():
        config = json.loads((CONFIGS / name).read_text())
        assert keys <= set(config), f"{name} lacks {keys - set(config)}"
        steps = config.get("run", [])
        if _reports_in_one_line(config):
            steps = steps[1:]
        assert all("run_or_exit" in step for step in steps), f"{name}: every run step must report errors"
    inference = json.loads((CONFIGS / "inference.json").read_text())
    assert inference["checkpoint"] == "$os.path.join(@bundle_root, 'models', 'model.pt')"


def _reports_in_one_line(config: dict) -> bool:
    """Whether a config's first run step installs the one-line error hook (configs that compose components)."""
    return config.get("run", [""])[0] == "$@scripts.report_errors_in_one_line()"


def _config_nodes(value, where=""):
    """Every ``_target_`` node of a config (dicts, nested in dicts and lists) with its location."""
    if isinstance(value, dict):
        if "_target_" in value:
            yield where, value
        for key, item in value.items():
            yield from _config_nodes(item, f"{where}#{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _config_nodes(item, f"{where}#{index}")


def test_config_nodes_name_only_fields_of_their_dataclass():
    """Every option of a bundle config is a field of the library's config dataclass: one source."""
    import dataclasses
    import importlib

    checked = 0
    for path in sorted(CONFIGS.glob("*.json")):
        config = json.loads(path.read_text())
        for where, node in _config_nodes(config):
            module, _, name = node["_target_"].rpartition(".")
            if not module:  # MONAI's own components (StatsHandler, SimpleInferer), found by MONAI
                continue
            target = getattr(importlib.import_module(module), name)
            if dataclasses.is_dataclass(target):
                fields = {f.name for f in dataclasses.fields(target)}
                options = {key for key in node if not key.startswith("_")}
                assert options <= fields, f"{path.name}{where}: {options - fields}"
                built_by_job = node.get("_mode_") == "callable"  # built inside run_or_exit
                assert built_by_job or _reports_in_one_line(config), f"{path.name}{where}: errors would be tracebacks"
                checked += 1
    assert checked >= 8


# ---------------------------------------------------------------------------------------------- drr.json


def test_drr_cli_writes_one_ct_to_output_projections(data, drr_single):
    proc, out = drr_single
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["projections"]
    projections, geometry = load_projections(out / "projections")
    assert tuple(projections.shape) == (VIEWS, 48, 48)
    assert geometry.angles_deg == pytest.approx([0.0, 60.0, 120.0, 180.0, 240.0, 300.0])
    assert len(list((out / "projections" / "png").glob("view_*.png"))) == VIEWS
    ct = load_ct(data["ct_a"])
    assert torch.allclose(
        torch.tensor(projections.meta["volume_affine"], dtype=torch.float64), ct.affine.double(), atol=1e-4
    )
    assert projections.meta["volume_shape"] == list(ct.shape)
    expected = GenerateDRR(load_geometry(data["geometry"]).with_uniform_angles(VIEWS))(HUToAttenuation()(ct))
    assert torch.allclose(projections.as_tensor(), expected.as_tensor(), atol=1e-5)
    assert float(projections.min()) >= 0.0 and 2.0 < float(projections.max()) < 20.0


def test_drr_in_process_writes_each_ct_of_a_folder_to_its_case(drr_single, drr_folder):
    assert sorted(p.name for p in drr_folder.iterdir()) == ["ct_a", "ct_b"]
    a, _ = load_projections(drr_folder / "ct_a")
    b, _ = load_projections(drr_folder / "ct_b")
    single, _ = load_projections(drr_single[1] / "projections")
    assert torch.allclose(a.as_tensor(), single.as_tensor(), atol=1e-6)  # CLI and in-process agree
    assert float((a - b).abs().max()) > 0.1  # the mirrored CT projects differently


# ---------------------------------------------------------------------------------------------- reconstruct.json


def test_reconstruct_in_process_fdk_lands_on_the_source_ct_grid(data, recon_fdk):
    image = nib.load(recon_fdk)
    ct = load_ct(data["ct_a"])
    assert image.shape == tuple(ct.shape) == (45, 45, 42)
    assert np.allclose(image.affine, ct.affine.numpy(), atol=1e-4)
    volume = np.asarray(image.dataobj)
    assert np.isfinite(volume).all()
    assert 17.0 < _psnr_3d(volume, ct.numpy()) < 30.0  # FDK of 6 views; uniform air scores 13.9 dB


def test_reconstruct_config_swaps_the_optimizer_and_adds_a_handler_without_python_edits(data, drr_single, tmp_path):
    """reconstruct.json exposes the field, optimizer, projector and extra handlers of the fit."""
    extra = [{"_target_": "StatsHandler", "name": "extra_stats", "epoch_log": False, "output_transform": "$lambda o: o"}]
    with _Records("monai_gnerf.engines.reconstruction") as log, _Records("extra_stats") as added:
        bundle_in_process("reconstruct.json", projections_dir=str(drr_single[1] / "projections"),
                          output_dir=str(tmp_path), handlers=extra, **{"optimizer#_target_": "torch.optim.SGD",
                          "optimizer#lr": 0.5, "fit#method": "grid", "fit#max_iterations": 3, "fit#budget_s": None,
                          "sparse_view#spacing_mm": 12.0})  # fmt: skip
    assert "grid: MaskedField on 30x30x28, SGD, FieldProjector" in log.messages  # the silhouette-masked grid
    assert len([m for m in added.messages if "loss" in m]) == 3  # the added handler saw every iteration
    assert (tmp_path / "reconstruction.nii.gz").is_file()


def test_reconstruct_without_projections_simulates_the_example_first(tmp_path):
    config = json.loads((CONFIGS / "reconstruct.json").read_text())
    assert config["projections_dir"] is None and config["example"]["views"] == 20
    assert config["example"]["geometry"] == "chest_cbct"
    overrides = {"fit#method": "fdk", "sparse_view#spacing_mm": 10.0, "example#views": 5}
    bundle_in_process("reconstruct.json", output_dir=str(tmp_path), **overrides)
    projections, geometry = load_projections(tmp_path / "projections")
    assert tuple(projections.shape) == (5, 160, 160) and geometry.name == "chest_cbct"
    ct = load_ct(example_ct_path())
    shape, affine = grid_for_spacing(ct.shape, ct.affine, 10.0)
    image = nib.load(tmp_path / "reconstruction.nii.gz")
    assert image.shape == shape and np.allclose(image.affine, affine.numpy(), atol=1e-3)
    assert np.isfinite(np.asarray(image.dataobj)).all()


def test_reconstruct_cli_contract_writes_hu_volume_over_the_ct_box(data, recon_cli):
    run, out = recon_cli
    proc = run.result()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    image = nib.load(out / "reconstruction.nii.gz")
    ct = load_ct(data["ct_a"])
    shape, affine = grid_for_spacing(ct.shape, ct.affine, 12.0)
    assert image.shape == shape == (30, 30, 28)
    assert np.allclose(image.affine, affine.numpy(), atol=1e-3)
    volume = np.asarray(image.dataobj)
    assert volume.dtype == np.float32 and np.isfinite(volume).all()
    assert -1001.0 <= volume.min() and volume.max() < 4000.0
    reference = reference_on_grid(ct.as_tensor(), ct.affine, shape, affine)
    metrics = volume_metrics(torch.from_numpy(volume), reference)
    # 6 views and seconds of training: well above a uniform volume (about 11 dB, SSIM < 0.01 here)
    assert 15.0 < metrics["psnr_db"] < 40.0 and 0.4 < metrics["ssim"] < 1.0
    figure = np.asarray(Image.open(out / "reconstruction.png"))  # the slices beside the volume
    assert figure.shape == (18 + 3 * 220, 220)
    for row in range(3):  # axial, coronal, sagittal: body (bright) and air (dark) in each
        tile = figure[18 + row * 220 : 18 + (row + 1) * 220]
        assert (tile > 128).mean() > 0.05 and (tile < 30).mean() > 0.05


# ---------------------------------------------------------------------------------------------- evaluate.json


def test_evaluate_cli_scores_a_folder_test_set(data, recon_fdk, drr_folder, tmp_path):
    recons, projections, out = tmp_path / "recons", tmp_path / "projections", tmp_path / "eval"
    (recons / "ct_a").mkdir(parents=True)
    shutil.copy(recon_fdk, recons / "ct_a" / "reconstruction.nii.gz")
    shutil.copy(data["ct_b"], recons / "ct_b.nii.gz")  # an exact copy of its reference
    shutil.copytree(drr_folder / "ct_a", projections / "ct_a")  # exact
    shutil.copytree(drr_folder / "ct_a", projections / "ct_b")  # the wrong CT's projections
    proc = bundle_cli("evaluate.json", tmp_path / "logs", reconstructions=recons, references=data["cts"], projections=projections,
                      reference_projections=drr_folder, output_dir=out, test_set_metrics_2d="@fid_kid_metrics")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

    header, rows = _read_csv(out / "metrics_3d.csv")
    assert header == ["case", "prediction", "reference", "psnr_db", "ssim"]
    assert float(rows["ct_b"]["psnr_db"]) == math.inf and float(rows["ct_b"]["ssim"]) == pytest.approx(1.0, abs=1e-9)
    expected = _psnr_3d(np.asarray(nib.load(recon_fdk).dataobj), load_ct(data["ct_a"]).numpy())
    assert float(rows["ct_a"]["psnr_db"]) == pytest.approx(expected, abs=1e-4)
    assert 0.2 < float(rows["ct_a"]["ssim"]) < 0.99

    with (out / "psnr_db_raw.csv").open() as handle:  # MONAI's MetricsSaver, beside ours: the same figures
        raw = {row["filename"]: float(row["class0"]) for row in csv.DictReader(handle)}
    assert raw == {str(recons / "ct_a" / "reconstruction.nii.gz"): pytest.approx(expected, abs=1e-4),
                   str(recons / "ct_b.nii.gz"): math.inf}  # fmt: skip

    header, rows = _read_csv(out / "metrics_2d.csv")
    assert header == ["case", "prediction", "reference", "views", "psnr_db", "ssim", "gmsd"]
    assert rows["ct_a"]["views"] == str(VIEWS)
    assert float(rows["ct_a"]["psnr_db"]) == math.inf and float(rows["ct_a"]["gmsd"]) == 0.0
    expected = _psnr_2d_mean(projections / "ct_b", drr_folder / "ct_b")
    assert float(rows["ct_b"]["psnr_db"]) == pytest.approx(expected, abs=1e-4) and expected < 30.0
    assert 0.0 < float(rows["ct_b"]["ssim"]) < 0.99 and float(rows["ct_b"]["gmsd"]) > 0.01

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data_range"] == 1.0
    assert summary["volumes"]["mean"]["psnr_db"] is None  # infinite (an exact copy): null in strict JSON
    assert summary["projections"]["mean"]["ssim"] == pytest.approx((1.0 + float(rows["ct_b"]["ssim"])) / 2)
    test_set = summary["projections"]["test_set"]
    assert set(test_set) == {"fid", "kid"}
    assert "RandomConvFeatures" in summary["projections"]["test_set_descriptions"]["fid"]
    predicted = torch.cat([_normalized_views(projections / c, drr_folder / c)[0] for c in ("ct_a", "ct_b")])
    reference = torch.cat([_normalized_views(projections / c, drr_folder / c)[1] for c in ("ct_a", "ct_b")])
    extractor = RandomConvFeatures(features=64, seed=0)
    with torch.no_grad():
        features = extract_features(predicted, extractor), extract_features(reference, extractor)
    assert test_set["fid"] == pytest.approx(frechet_distance(*features), rel=1e-5, abs=1e-12)
    assert test_set["kid"] == pytest.approx(kernel_inception_distance(*features)[0], rel=1e-5)
    assert test_set["fid"] > 1e-8  # the wrong CT's views (identical sets: |FID| < 1e-10)


def test_evaluate_in_process_resamples_the_reference_and_runs_test_set_metrics(data, recon_cli, drr_single, tmp_path):
    assert recon_cli[0].result().returncode == 0
    projections = drr_single[1] / "projections"
    bundle_in_process("evaluate.json", reconstructions=str(recon_cli[1]), references=str(data["ct_a"]),
                      projections=str(projections), reference_projections=str(projections), output_dir=str(tmp_path),
                      test_set_metrics_2d={"mean_abs_error": "$lambda p, r: float((p - r).abs().mean())",
                                           "views": "$lambda p, r: float(p.shape[0])"})  # fmt: skip
    summary = json.loads((tmp_path / "metrics.json").read_text())
    (case,) = summary["volumes"]["cases"]
    assert case["case"] == "ct_a" and case["shape"] == [30, 30, 28]
    assert case["prediction"] == str(recon_cli[1] / "reconstruction.nii.gz")
    ct = load_ct(data["ct_a"])
    volume = np.asarray(nib.load(recon_cli[1] / "reconstruction.nii.gz").dataobj)
    area_averaged = resample_area(ct.as_tensor().clamp(min=-1000.0), (30, 30, 28)).numpy()  # clipped at air first
    assert case["psnr_db"] == pytest.approx(_psnr_3d(volume, area_averaged), abs=1e-4)
    assert summary["projections"]["test_set"] == {"mean_abs_error": 0.0, "views": float(VIEWS)}
    assert summary["projections"]["test_set_descriptions"] == {"mean_abs_error": "", "views": ""}


# ---------------------------------------------------------------------------------------------- errors


def test_a_wrong_path_fails_with_one_clear_line_through_the_cli(wrong_path_cli):
    run, missing, out = wrong_path_cli
    proc = run.result()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"monai-gnerf: error: dataset not found: {missing}"
    assert sum("monai-gnerf: error" in line for line in lines) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ("reconstruct.json", {"projections_dir": "{tmp}/missing_projections"},
         "projection folder not found: {tmp}/missing_projections"),
        ("reconstruct.json", {"projections_dir": "{tmp}", "device": "gpu0"}, "unknown device 'gpu0'"),
        ("drr.json", {"drr#geometry": "no_such_preset"}, "'no_such_preset' is neither a geometry JSON file nor a preset"),
        ("evaluate.json", {}, "nothing to evaluate"),
        ("evaluate.json", {"reconstructions": "{tmp}", "references": "example"},
         "no reconstruction for case 'example_chest_ct'"),
        ("evaluate.json", {"projections": "{projections}", "reference_projections": "{projections}",
                           "test_set_metrics_2d": "@fid_kid_metrics", "feature_extractor_file": "{tmp}/inception.pt"},
         "feature extractor file not found: {tmp}/inception.pt"),
        ("inference.json", {"xray": "{tmp}/missing.png"}, "X-ray file not found: {tmp}/missing.png"),
        ("inference.json", {"xray": "{projections}/png/view_000.png", "fit#weighting": "learned"},
         "weighting must be 'fixed', 'uncertainty' or 'uncertainty_ratio', got 'learned'"),
        ("inference.json", {"checkpoint": "{projections}/geometry.json"}, "cannot load checkpoint"),
        ("inference.json", {"xray": "{projections}/png/view_000.png", "device": "banana"}, "unknown device 'banana'"),
        ("reconstruct.json", {"projections_dir": "{projections}", "fit#lr": 0.01},
         "ReconstructionConfig has no option lr; its options: method, max_iterations"),
        ("drr.json", {"overwrite": "maybe"}, "overwrite is a flag: true or false, not 'maybe'"),
        # without inputs the configs simulate the example first: a bad option stops them before that
        ("reconstruct.json", {"fit#lr": 0.01}, "ReconstructionConfig has no option lr"),
        ("inference.json", {"fit#weighting": "learned"}, "weighting must be 'fixed', 'uncertainty'"),
        # ... and an error of the job after the example was written removes the folder this run made
        ("reconstruct.json", {"sparse_view#mask": "{tmp}/missing_mask.nii.gz"},
         "mask must be 'silhouette', 'none' or a mask file; {tmp}/missing_mask.nii.gz does not exist"),
        ("inference.json", {"fit#structural_loss": "vgg"}, "VGG16 weights file not found: None"),
        # ... as does a 2D case failing after the 3D cases were scored and saved (MONAI's MetricsSaver)
        ("evaluate.json", {"reconstructions": "{ct}", "references": "{ct}", "projections": "{tmp}",
                           "reference_projections": "{projections}"}, "has no geometry.json describing its projections"),
        ("evaluate.json", {"reconstructions": "{ct}", "references": "{tmp}/tiny.nii.gz"}, "absurd voxel spacing"),
        ("evaluate.json", {"reconstructions": "{ct}", "references": "{ct}", "device": "banana"}, "unknown device 'banana'"),
        ("evaluate.json", {"reconstructions": 5, "references": "{ct}"}, "reconstructions not found: 5"),
        ("reconstruct.json", {"projections_dir": "{projections}", "optimizer#_target_": "torch.optim.NoSuch"},
         "Cannot locate class or function path: 'torch.optim.NoSuch'"),
    ],
)  # fmt: skip
def test_user_errors_in_process_are_one_message(config, overrides, message, tmp_path, data, drr_single, capsys):
    """In-process, a job's user error is one line and SystemExit(2); one raised while MONAI builds the
    components of a composing config (``inference.json``) is MONAI's error, caused by the user error
    (through the CLI the config's hook makes it the same line: the ``*_cli`` tests). Nothing is
    written."""
    places = {"tmp": tmp_path, "projections": drr_single[1] / "projections", "ct": data["ct_a"]}
    overrides = {key: value.format(**places) if isinstance(value, str) else value for key, value in overrides.items()}
    save_volume(tmp_path / "tiny.nii.gz", torch.zeros(4, 4, 4), torch.diag(torch.tensor([1e-3, 1e-3, 1e-3, 1.0])))
    try:
        bundle_in_process(config, output_dir=str(tmp_path / "out"), **overrides)
    except SystemExit as exit_info:
        assert exit_info.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err, err[-3000:]  # not logged by a handler on the way either
        last = err.strip().splitlines()[-1]
        assert last.startswith("monai-gnerf: error: ") and message.format(**places) in last
    except (RuntimeError, ModuleNotFoundError) as err:  # MONAI's, raised while it builds the components
        assert _reports_in_one_line(json.loads((CONFIGS / config).read_text()))
        found = bundle_scripts.user_error(err)
        assert found is not None and message.format(**places) in str(found)
    else:
        pytest.fail("no error")
    assert not (tmp_path / "out").exists()


def _write_then_fail(folder: Path) -> None:
    (folder / "input").mkdir(parents=True, exist_ok=True)
    raise GnerfInputError("bad input after writing")


def test_an_interrupted_bundle_run_ends_in_one_line(monkeypatch, capsys):
    """Ctrl-C reaches the hook as an uncaught KeyboardInterrupt: one line, no traceback (Python
    then exits with the status of SIGINT, 130)."""
    monkeypatch.setattr(sys, "excepthook", lambda *_: pytest.fail("the previous hook printed a traceback"))
    bundle_scripts.report_errors_in_one_line()
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == "monai-gnerf: interrupted\n"


def test_run_output_removes_only_a_folder_its_run_made(tmp_path, capsys):
    """A run that made ``output_dir`` and ends in a user error removes it; a run of the same
    workflow object again (the first run's results in place) leaves them."""
    folder = tmp_path / "out"
    output = bundle_scripts.RunOutput(folder)
    output.run_or_exit(output.start)
    with pytest.raises(SystemExit) as failed:
        output.run_or_exit(_write_then_fail, folder)
    assert failed.value.code == 2 and not folder.exists()
    assert capsys.readouterr().err.strip() == "monai-gnerf: error: bad input after writing"

    output.run_or_exit(output.start)  # a first run that succeeds
    (folder / "result.nii.gz").parent.mkdir(parents=True)
    (folder / "result.nii.gz").write_bytes(b"1")
    output.run_or_exit(output.start)  # the same workflow run again fails after writing: results stay
    with pytest.raises(SystemExit):
        output.run_or_exit(_write_then_fail, folder)
    assert (folder / "result.nii.gz").read_bytes() == b"1"


# ---------------------------------------------------------------------------------------------- docs


def test_docs_transforms_example_runs(tmp_path, monkeypatch):
    readme = (BUNDLE / "docs" / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "GenerateDRRd" in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "bundle/docs/README.md", "exec"), namespace)  # noqa: S102 - the documented example itself
    assert tuple(namespace["drr"].shape) == (72, 128, 128)
    projections, geometry = load_projections(tmp_path / "outputs" / "mednerf_drrs")
    assert geometry.name == "mednerf_chest" and tuple(projections.shape) == (72, 128, 128)
    ct = load_ct(example_ct_path())
    assert projections.meta["volume_shape"] == list(ct.shape)
    assert torch.allclose(
        torch.tensor(projections.meta["volume_affine"], dtype=torch.float64), ct.affine.double(), atol=1e-4
    )


# ---------------------------------------------------------------------------------------------- generative prior

TINY_PRIOR = {"job#detector_size": 32, "job#subjects": 2, "prior#batch_size": 2, "prior#patch_size": 8,
              "network_def#config#num_samples": 8, "prior#checkpoint_every": 2, "prior#log_every": 1,
              "prior#validate_every": 2}  # fmt: skip
EXTRA_HANDLER = {  # MONAI's CheckpointSaver added to train#handlers by a second config file, no Python edits
    "+train#handlers": [{"_target_": "CheckpointSaver", "save_dir": "$os.path.join(@output_dir, 'final')",
                         "save_dict": {"generator": "$@train#ema.ema_model"}, "save_final": True,
                         "final_filename": "ema_final.pt"}]
}  # fmt: skip
TINY_FIT = {"fit#latent_iterations": 2, "fit#finetune_iterations": 2, "fit#restarts": 1, "single_view#volume_size": 16}
SHIPPED_MODEL = BUNDLE / "models" / "model.pt"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Records(logging.Handler):
    """Collects the messages of a logger (ConfigWorkflow replaces the root logger's handlers)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self._logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Records:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_) -> None:
        self._logger.removeHandler(self)


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("*.pt"))


def _assert_centred_volume(path: Path, size: int) -> None:
    image = nib.load(path)
    assert image.shape == (size,) * 3
    centre = image.affine @ np.array([(size - 1) / 2.0] * 3 + [1.0])
    assert np.allclose(centre[:3], 0.0, atol=1e-4)  # the generator's scene cube around the isocenter
    volume = np.asarray(image.dataobj)
    assert volume.dtype == np.float32 and np.isfinite(volume).all() and volume.min() >= -1000.0 - 1e-3


def _assert_views(folder: Path, detector: int) -> None:
    stack = nib.load(folder / "projections.nii.gz")
    assert stack.shape == (detector, detector, 72)  # NIfTI layout (cols, rows, views)
    geometry = load_geometry(folder / "geometry.json")
    assert geometry.angles_deg == pytest.approx([5.0 * k for k in range(72)], abs=1e-6)
    assert len(list((folder / "png").glob("view_*.png"))) == 72


@pytest.fixture(scope="module")
def train_cli(data):
    """train.json through the CLI, tiny (background)."""
    out = data["root"] / "prior"
    return BundleRun("train.json", data["root"] / "logs_train", output_dir=out, **{"prior#max_iterations": 4}, **TINY_PRIOR), out


@pytest.fixture(scope="module")
def train_composed_cli(data):
    """train.json + a config file adding a handler, a wider network and ``--tracking mlflow`` (background)."""
    extra = data["root"] / "extra_handler.json"
    extra.write_text(json.dumps(EXTRA_HANDLER))
    out = data["root"] / "prior_composed"
    run = BundleRun(["train.json", str(extra)], data["root"] / "logs_composed", output_dir=out, tracking="mlflow",
                    **{"prior#max_iterations": 3, "network_def#config#hidden_features": 48}, **TINY_PRIOR)  # fmt: skip
    return run, out


@pytest.fixture(scope="module")
def single_view_cli(data, inference_cli):
    """``monai-gnerf single-view`` on inference_cli's X-ray with the same options (background)."""
    _, xray, _ = inference_cli
    out = data["root"] / "single_view_cli"
    command = [sys.executable, "-m", "monai_gnerf.apps.cli", "single-view", str(xray), "--checkpoint",
               str(data["root"] / "prior" / "generator.pt"), "--out", str(out), "--latent_iterations", "2",
               "--finetune_iterations", "2", "--restarts", "1", "--volume_size", "16"]  # fmt: skip
    return BackgroundRun(command, data["root"] / "logs_single_view_cli"), out


@pytest.fixture(scope="module")
def train_errors_cli(data):
    """train.json through the CLI with a missing dataset and with a batch size of 0 (background)."""
    runs = {}
    for name, overrides in {"data": {"dataset_dir": data["root"] / "no_such_data"}, "batch": {"prior#batch_size": 0}}.items():
        out = data["root"] / f"train_error_{name}"
        runs[name] = BundleRun("train.json", data["root"] / f"logs_train_error_{name}", output_dir=out, **overrides), out
    return runs


@pytest.fixture(scope="module")
def train_ddp(data):
    """train.json + multi_gpu_train.json under torchrun, 2 CPU ranks (gloo), tiny (background)."""
    out = data["root"] / "prior_ddp"
    launcher = ("-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}")
    run = BundleRun(["train.json", "multi_gpu_train.json"], data["root"] / "logs_ddp", launcher=launcher, timeout=240,
                    output_dir=out, **{"prior#max_iterations": 4}, **TINY_PRIOR)  # fmt: skip
    return run, out


@pytest.fixture(scope="module")
def missing_checkpoint_cli(data):
    """inference.json through the CLI with a checkpoint that does not exist (background)."""
    missing, out = data["root"] / "no_such_model.pt", data["root"] / "inference_missing"
    run = BundleRun("inference.json", data["root"] / "logs_missing_model", checkpoint=missing, output_dir=out)
    return run, missing, out


@pytest.fixture(scope="module")
def ckpt_export_cli(data):
    """The README's ``ckpt_export`` command, run from the repository root (background)."""
    readme = (BUNDLE / "docs" / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL) if "ckpt_export" in b]
    command = shlex.split(block.replace("\\\n", " "))
    assert command[:4] == ["python", "-m", "monai.bundle", "ckpt_export"]
    model_ts = data["root"] / "model.ts"
    command[0], command[command.index("--filepath") + 1] = sys.executable, str(model_ts)
    return BackgroundRun(command, data["root"] / "logs_ckpt_export", cwd=BUNDLE.parent), model_ts


@pytest.fixture(scope="module")
def tiny_generator(train_cli, train_ddp, missing_checkpoint_cli, ckpt_export_cli, train_composed_cli, train_errors_cli):
    """The generator of train_cli (the other background runs start first, to run alongside it)."""
    proc = train_cli[0].result()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return train_cli[1] / "generator.pt"


@pytest.fixture(scope="module")
def inference_cli(data, tiny_generator):
    """inference.json through the CLI on an X-ray file (one view of ct_a in the tiny model's geometry)."""
    xray = bundle_scripts.simulate_model_xray(tiny_generator, data["root"] / "xray", ct=data["ct_a"])
    out = data["root"] / "inference"
    run = BundleRun("inference.json", data["root"] / "logs_inference", xray=xray, checkpoint=tiny_generator,
                    output_dir=out, **TINY_FIT)  # fmt: skip
    return run, xray, out


def test_train_cli_writes_generator_checkpoint_samples_and_tensorboard(train_cli, tiny_generator):
    proc, out = train_cli[0].result(), train_cli[1]
    assert "Traceback" not in proc.stderr
    generator, geometry, extra = load_generator(tiny_generator)
    assert geometry.detector_shape == (32, 32) and geometry.name == "mednerf_chest" and len(geometry.angles_deg) == 72
    assert generator.config.num_samples == 8 and extra["iterations"] == 4 and extra["data"] == "phantoms"
    assert extra["config"]["prior"]["patch_size"] == 8 and extra["config"]["prior"]["batch_size"] == 2
    assert extra["map_residual_subjects"] == 8 and 0.0 < extra["map_residual_mse"] < 1.0  # the fit's discrepancy target
    assert _checkpoints(out) == ["prior_checkpoint_4.pt"]
    assert (out / "checkpoints" / "samples.png").stat().st_size > 0
    from gnerf_testing import tensorboard_scalars

    steps = {tag: [step for step, _ in values] for tag, values in tensorboard_scalars(out / "tensorboard").items()}
    assert steps["val_psnr"] == steps["val_ssim"] == [2, 4]  # validate#evaluator, every prior#validate_every
    assert steps["loss"] == [1, 2, 3, 4]


def test_train_in_process_resumes_from_the_checkpoint(train_cli, tiny_generator, tmp_path):
    out = tmp_path / "prior"
    shutil.copytree(train_cli[1], out)
    with _Records("monai_gnerf.engines.prior") as log:
        bundle_in_process("train.json", output_dir=str(out), **{"prior#max_iterations": 6}, **TINY_PRIOR)
    assert f"resumed from {out / 'checkpoints' / 'prior_checkpoint_4.pt'} at iteration 4" in log.messages
    assert _checkpoints(out) == ["prior_checkpoint_6.pt"]
    resumed, _, extra = load_generator(out / "generator.pt")
    assert extra["iterations"] == 6
    before, _, _ = load_generator(tiny_generator)
    assert any(not torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), before.state_dict().values()))


def test_train_config_passes_monai_check_properties(tmp_path):
    workflow = _checked_workflow("train.json", "train", tmp_path / "out", **TINY_PRIOR)
    trainer = workflow.trainer
    from monai.engines import Trainer

    assert isinstance(trainer, Trainer) and trainer.state.max_epochs == workflow.max_epochs == 1
    assert isinstance(workflow.train_dataset[0]["image"], torch.Tensor)


def test_train_on_ct_data_runs_the_ct_preprocessing_of_the_config(data, tmp_path):
    """train#preprocessing (LoadCTd -> HUToAttenuationd -> GenerateDRRd) makes the views of CT training data."""
    from monai_gnerf.render import render_drr
    from monai_gnerf.physics import hu_to_attenuation

    overrides = {**TINY_PRIOR, "prior#max_iterations": 2, "prior#validate_every": None}
    workflow = _checked_workflow("train.json", "train", tmp_path / "prior", dataset_dir=str(data["cts"]), **overrides)
    dataset = workflow.train_dataset
    assert dataset.num_subjects == 2 and dataset.transform is workflow.train_preprocessing
    ct = load_ct(data["ct_a"])
    geometry = load_geometry(dataset.geometry.to_dict()).resolved(volume_center_mm(ct.affine, ct.shape).tolist())
    assert torch.allclose(dataset[0]["image"], render_drr(hu_to_attenuation(ct), geometry, views=[0])[0], atol=1e-4)
    workflow.run()
    _, _, extra = load_generator(tmp_path / "prior" / "generator.pt")
    assert extra["iterations"] == 2 and extra["data"] == str(data["cts"])


def test_composed_train_runs_an_added_handler_a_wider_network_and_mlflow_tracking(train_composed_cli, tiny_generator):
    run, out = train_composed_cli
    proc = run.result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    generator, _, extra = load_generator(out / "generator.pt")
    assert generator.config.hidden_features == 48 and extra["config"]["prior"]["generator"]["hidden_features"] == 48
    final = torch.load(out / "final" / "ema_final.pt", weights_only=True)  # the added MONAI CheckpointSaver
    assert all(torch.equal(final[k], v) for k, v in generator.state_dict().items())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (tracked,) = client.search_runs(experiments)
    losses = [m.value for m in client.get_metric_history(tracked.info.run_id, "train_loss")]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    assert tracked.info.status == "FINISHED"


@pytest.mark.parametrize(
    "case, message",
    [("data", "training data not found: {root}/no_such_data"), ("batch", "batch_size must be an integer >= 1, got 0")],
)
def test_train_user_errors_are_one_line_through_the_cli(train_errors_cli, data, tiny_generator, case, message):
    """train.json builds its components in the config: their errors too end in one line and status 2."""
    run, out = train_errors_cli[case]
    proc = run.result()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("monai-gnerf: error: " + message.format(root=data["root"]))
    assert not out.exists()


def test_multi_gpu_train_runs_both_ranks_and_rank_0_writes(train_ddp):
    run, out = train_ddp
    proc = run.result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}/2 finished (gloo, cpu)" in proc.stdout
    assert _checkpoints(out) == ["prior_checkpoint_4.pt"]
    assert sorted(p.name for p in out.glob("*.pt")) == ["generator.pt"]
    _, _, extra = load_generator(out / "generator.pt")
    assert extra["iterations"] == 4


def test_inference_cli_writes_the_slicer_contract_outputs(inference_cli):
    run, xray, out = inference_cli
    proc = run.result()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    _assert_centred_volume(out / "volume.nii.gz", 16)
    _assert_views(out / "views", 32)
    assert (out / "views.gif").is_file() and not (out / "input").exists()  # an X-ray was given: nothing simulated
    assert Image.open(out / "fit.png").size == (3 * 96, 2 * 14 + 2 * 96)  # input | fit | difference, loss history
    fit = json.loads((out / "fit.json").read_text())
    assert fit["xray"] == str(xray) and fit["config"]["fit"]["latent_iterations"] == 2 and fit["config"]["fit"]["restarts"] == 1


def _checked_workflow(config: str, kind: str, out: Path, **overrides) -> ConfigWorkflow:
    """A config as a MONAI ``ConfigWorkflow`` of ``kind``, initialized, after MONAI's property check passed."""
    workflow = ConfigWorkflow(config_file=str(CONFIGS / config), workflow_type=kind, bundle_root=str(BUNDLE),
                              output_dir=str(out), **overrides)  # fmt: skip
    workflow.initialize()
    assert workflow.check_properties() == []
    return workflow


def test_evaluate_config_passes_monai_check_properties(tmp_path):
    from monai.engines import SupervisedEvaluator

    assert isinstance(_checked_workflow("evaluate.json", "infer", tmp_path / "out").evaluator, SupervisedEvaluator)


def test_inference_config_passes_monai_check_properties(tmp_path):
    from monai.engines import SupervisedEvaluator
    from monai.handlers import CheckpointLoader

    workflow = _checked_workflow("inference.json", "infer", tmp_path / "out")
    assert isinstance(workflow.evaluator, SupervisedEvaluator)
    assert any(isinstance(h, CheckpointLoader) for h in workflow.handlers)
    assert workflow.network_def.config == load_generator(SHIPPED_MODEL)[0].config  # built from the file's header


def test_inference_through_checkpoint_loader_equals_the_cli_single_view(inference_cli, single_view_cli):
    """The bundle builds the network from the file's header and loads its weights with MONAI's
    CheckpointLoader; the CLI loads the generator file itself. Same input, same options: same result."""
    assert inference_cli[0].result().returncode == 0
    run, out = single_view_cli
    proc = run.result()
    assert proc.returncode == 0, proc.stderr[-2000:]
    bundle_out = inference_cli[2]
    for name in ("volume.nii.gz", "views/projections.nii.gz"):
        ours, theirs = (np.asarray(nib.load(folder / name).dataobj) for folder in (bundle_out, out))
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), name
        assert ours.std() > 0  # not trivially equal


def test_inference_with_the_shipped_model_runs_on_the_default_input(tmp_path):
    bundle_in_process("inference.json", output_dir=str(tmp_path), bundle_root=str(BUNDLE), **TINY_FIT)
    png = tmp_path / "input" / "png" / "view_000.png"
    xray = load_xray(png)
    assert xray.is_line_integral and tuple(xray.values.shape) == (64, 64)
    _, geometry = load_projections(tmp_path / "input")
    assert geometry.angles_deg == (0.0,)  # one PA view
    ct = load_ct(example_ct_path())
    assert geometry.isocenter_mm == pytest.approx(volume_center_mm(ct.affine, ct.shape), abs=1e-3)  # the CT's centre
    _assert_centred_volume(tmp_path / "volume.nii.gz", 16)
    _assert_views(tmp_path / "views", 64)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert Path(fit["checkpoint"]).resolve() == SHIPPED_MODEL.resolve() and fit["xray"] == str(png)


def test_shipped_model_is_the_documented_generator():
    assert SHIPPED_MODEL.stat().st_size < 10_000_000
    generator, geometry, extra = load_generator(SHIPPED_MODEL)
    assert generator.config == GeneratorConfig()  # the library's default sizes
    assert geometry.name == "mednerf_chest" and geometry.detector_shape == (64, 64)
    prior = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    assert prior["inputs"]["image"]["spatial_shape"] == prior["outputs"]["views"]["spatial_shape"] == [64, 64]
    assert extra["data"] == "phantoms" and extra["subjects"] == 64  # never the example CT
    assert "latent_mean" in extra and 0.3 < extra["silhouette_width_fraction"] < 0.95
    assert extra["map_residual_subjects"] == 8 and 1e-4 < extra["map_residual_mse"] < 1e-2  # validation phantoms
    readme = (BUNDLE / "docs" / "README.md").read_text()
    assert f"{extra['iterations']} iterations" in readme


def test_missing_checkpoint_fails_with_one_clear_line_through_the_cli(missing_checkpoint_cli):
    run, missing, out = missing_checkpoint_cli
    proc = run.result()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"monai-gnerf: error: checkpoint not found: {missing}"
    assert not out.exists()


def test_ckpt_export_fails_for_the_documented_reason(ckpt_export_cli):
    """docs/README.md: the generator is not TorchScript-scriptable, so its ``ckpt_export`` command fails."""
    run, model_ts = ckpt_export_cli
    proc = run.result()
    reason = "python value of type 'int' cannot be used as a value"
    assert reason in (BUNDLE / "docs" / "README.md").read_text()
    assert proc.returncode != 0 and not model_ts.exists()
    assert "RuntimeError" in proc.stderr and reason in proc.stderr
    assert "monai_gnerf/networks/generator.py" in proc.stderr  # LatentGridField.grids, as documented


def test_a_failing_case_of_a_dataset_leaves_no_projection_folders(tmp_path):
    dataset = tmp_path / "cts"
    dataset.mkdir()
    shutil.copy(example_ct_path(), dataset / "a_good.nii.gz")
    (dataset / "b_bad.nii.gz").write_text("not a volume")
    config = monai_gnerf.apps.DRRConfig(geometry="x2ct_biplanar")
    with pytest.raises(GnerfInputError, match="could not read CT .*b_bad.nii.gz"):
        bundle_scripts.simulate_dataset(dataset, tmp_path / "out", config, overwrite="false")
    assert not (tmp_path / "out" / "a_good").exists()  # written before b_bad failed, then removed
    assert bundle_scripts.simulate_dataset(example_ct_path(), tmp_path / "one", config)[0].name == "projections"
