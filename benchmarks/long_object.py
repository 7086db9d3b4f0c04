"""The long-object problem through the CLI: a knee whose leg goes on past the grid's end faces.

The held-out procedural knee of ``sparse_view_suite.py`` (``difnet`` preset, 10 views over 180
degrees, exact line integrals of the whole leg, 2.5 mm grid of 200 x 200 x 250 mm) reconstructed
by ``monai-gnerf reconstruct`` twice with the same budget: with ``--axial_margin_mm 0`` (the field
holds the grid only) and with the default (the field reaches past the end faces where the
projections show the object going on; the output is cropped from it). Rows: 3D PSNR/SSIM against
the voxel-averaged truth, the share of the squared error in the two end slices, and the PSNR
without three slices at each end. Run on a quiet machine::

    python benchmarks/long_object.py [--budget-s 60]

Prints a table and writes ``benchmarks/results/long_object.json`` and ``.png`` (coronal and
sagittal slices show the end slices; truth, both fits and their errors, 0-300 HU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sparse_view import cli, score  # noqa: E402
from sparse_view_suite import CASES  # noqa: E402

from monai_gnerf.apps import comparison_figure  # noqa: E402
from monai_gnerf.io import load_ct  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CASE = "knee_difnet"
END_SLICES = 3


def end_slice_share(volume_hu: torch.Tensor, truth_hu: torch.Tensor, axis: int = 2) -> float:
    """The fraction of the squared error (HU clipped at air, as scored) in the first and last slice along ``axis``."""
    error = (volume_hu.clamp(min=-1000.0) - truth_hu.clamp(min=-1000.0)) ** 2
    per_slice = error.sum(dim=tuple(a for a in range(3) if a != axis))
    return float((per_slice[0] + per_slice[-1]) / per_slice.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=60.0, help="wall time of each fit, seconds")
    parser.add_argument("--json", type=Path, default=RESULTS / "long_object.json")
    args = parser.parse_args()
    rows, volumes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, truth_hu = CASES[CASE].prepare(Path(tmp) / CASE)
        volumes["truth"] = truth_hu
        for label, options in (("field in the grid only (--axial_margin_mm 0)", ["--axial_margin_mm", "0"]),
                               ("default: margins past the end faces", [])):  # fmt: skip
            out = Path(tmp) / f"fit_{len(rows)}.nii.gz"
            seconds = cli("reconstruct", str(folder), "--out", str(out), "--budget_s", str(args.budget_s), *options)
            volume = load_ct(out)
            affine = volume.affine
            volumes[label.split(" (")[0].split(":")[0]] = volume.as_tensor()
            inner = (slice(None), slice(None), slice(END_SLICES, -END_SLICES))
            rows.append({"label": label, "command": " ".join(["monai-gnerf reconstruct DIR --budget_s", str(args.budget_s), *options]),
                         "seconds": seconds, **score(volume.as_tensor(), truth_hu),
                         "end_slice_error_share": end_slice_share(volume.as_tensor(), truth_hu),
                         f"psnr_3d_without_{END_SLICES}_end_slices": score(volume.as_tensor()[inner], truth_hu[inner])["psnr_3d"]})  # fmt: skip
            print(f"{label:48s} PSNR {rows[-1]['psnr_3d']:6.2f} dB  SSIM {rows[-1]['ssim_3d']:.3f}  "
                  f"end slices {100 * rows[-1]['end_slice_error_share']:5.1f} % of the error  {seconds:5.1f} s", flush=True)
    print(f"\nLong object: {CASES[CASE].name}, CLI, {args.budget_s:.0f} s each")
    print(f"| fit | 3D PSNR / SSIM | error in the 2 end slices | PSNR without {END_SLICES} end slices each side | s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['psnr_3d']:.2f} / {r['ssim_3d']:.3f} | {100 * r['end_slice_error_share']:.1f} % | "
              f"{r[f'psnr_3d_without_{END_SLICES}_end_slices']:.2f} | {r['seconds']:.0f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"case": CASES[CASE].name, "budget_s": args.budget_s, "rows": rows}, indent=2) + "\n")
    shown = {name: v.clamp(min=-1000.0) for name, v in volumes.items()}
    figure = comparison_figure(args.json.with_suffix(".png"), shown, affine, window=(-1000.0, 1000.0), reference="truth",
                               error_window=300.0)  # fmt: skip
    print(f"wrote {args.json} and {figure}")


if __name__ == "__main__":
    main()
