"""Start-up and FDK cost: what a CLI run pays beyond its work, and our FDK against RTK's, one run.

Whole processes (each the best of ``--repeats`` runs, wall time): ``python -c "import torch"``,
``python -c "import monai"`` (the floor of any MONAI-based command), ``monai-gnerf --help`` and
``monai-gnerf reconstruct DIR --method fdk`` on projections of the embedded example CT
(``chest_cbct``, 10 / 25 / 50 views, made by ``monai-gnerf drr``). In process, on the grid the CLI
reconstructs on: our ``fdk`` and RTK 2.7's ``FDKConeBeamReconstructionFilter`` (CPU, through
``benchmarks/peers/rtk_peer.py``; its first use is an untimed warm-up), best of ``--repeats``.
The CLI's fixed cost is its wall time minus our in-process FDK time.

Usage::

    python benchmarks/startup.py [--views 10 25 50] [--repeats 3] [--contended]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import rtk_peer  # noqa: E402
from timing import THREADS, busy_process  # noqa: E402

from monai_gnerf.data import example_ct_path  # noqa: E402
from monai_gnerf.io import load_ct, load_projections  # noqa: E402
from monai_gnerf.render import fdk  # noqa: E402

CLI = Path(sys.executable).with_name("monai-gnerf")  # the installed command, as a user runs it


def wall_s(command: list[str]) -> float:
    """Wall time of one whole process, seconds; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def best_wall_s(command: list[str], repeats: int) -> float:
    """Best of ``repeats`` whole-process runs."""
    return min(wall_s(command) for _ in range(repeats))


def best_s(fn, repeats: int) -> float:
    """Best of ``repeats`` timed calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fdk_rows(views: int, work: Path, repeats: int) -> dict:
    folder, out = work / f"projections_{views}", work / f"fdk_{views}.nii.gz"
    subprocess.run([str(CLI), "drr", str(example_ct_path()), "--out", str(folder), "--geometry", "chest_cbct",
                    "--views", str(views)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    command = [str(CLI), "--threads", str(THREADS), "reconstruct", str(folder), "--out", str(out), "--method", "fdk",
               "--overwrite"]  # fmt: skip
    cli_s = best_wall_s(command, repeats)
    grid = load_ct(out)
    shape, affine = tuple(grid.shape), grid.affine
    projections, geometry = load_projections(folder)
    projections = projections.as_tensor()
    with torch.no_grad():
        ours_s = best_s(lambda: fdk(projections, geometry, shape, affine), repeats)
    row = {"views": views, "grid": list(shape), "cli_fdk_s": cli_s, "ours_fdk_s": ours_s, "cli_fixed_s": cli_s - ours_s}
    if rtk_peer.available():
        method = rtk_peer.RTKMethod("fdk")
        row["rtk_fdk_s"] = min(rtk_peer.rtk_reconstruct(method, projections, geometry, shape, affine, 0.0)[1] for _ in range(repeats))
        row["ours_over_rtk"] = ours_s / row["rtk_fdk_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contended", action="store_true", help="run beside one busy CPU-bound process")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/startup[_contended].json")
    args = parser.parse_args()
    args.json = args.json or ROOT / "benchmarks" / "results" / f"startup{'_contended' if args.contended else ''}.json"
    torch.set_num_threads(THREADS)
    rtk_peer.set_threads(THREADS)
    with busy_process(args.contended), tempfile.TemporaryDirectory() as tmp:
        processes = {
            "python -c 'import torch'": best_wall_s([sys.executable, "-c", "import torch"], args.repeats),
            "python -c 'import monai'": best_wall_s([sys.executable, "-c", "import monai"], args.repeats),
            "monai-gnerf --help": best_wall_s([str(CLI), "--help"], args.repeats),
        }
        rows = [fdk_rows(views, Path(tmp), args.repeats) for views in args.views]
    print(f"\nWhole processes, best of {args.repeats} ({THREADS} threads{', beside a busy process' if args.contended else ''})")
    for name, seconds in processes.items():
        print(f"  {name:28s} {seconds:6.2f} s")
    print(f"\n{'views':>5s} {'CLI FDK s':>10s} {'ours FDK s':>11s} {'CLI fixed s':>12s} {'RTK FDK s':>10s} {'ours / RTK':>11s}")
    for r in rows:
        print(f"{r['views']:5d} {r['cli_fdk_s']:10.2f} {r['ours_fdk_s']:11.3f} {r['cli_fixed_s']:12.2f} "
              f"{r.get('rtk_fdk_s', float('nan')):10.3f} {r.get('ours_over_rtk', float('nan')):11.2f}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"processes_s": processes, "fdk": rows, "threads": THREADS, "repeats": args.repeats, "contended": args.contended}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
