"""Single-view reconstruction: the generative priors against the trivial and linear baselines, one run.

Two priors are trained on the procedural chest population (subjects 0..N-1) for the same CPU
budget each:

* **GRAF MLP prior** (``architecture="graf"``): MedNeRF's adversarial training on DRR patches only;
* **grid prior** (``architecture="grid"``): the latent decoded to a density grid, adversarial patches
  plus the per-subject view and 3D terms (the population's volumes are known; say so when quoting).

Held-out subjects (indices from 10_000, never seen in training) are reconstructed from ONE view
(PA, view 0 of the 72-view MedNeRF orbit) by:

* **copy input**: the input view at every angle, mirrored left-right for the back half (trivial);
* **population mean**: the mean training views per angle and the mean training volume;
* **PCA fit**: the training volumes' PCA fitted to the view through the Joseph projector (MAP, its
  noise variance chosen on validation subjects 20_000.., never the test subjects, by the mean of
  its 2D and 3D PSNR);
* **GRAF prior** and **grid prior** with the CLI's default fit (the Gauss-Newton MAP code under the
  learned latent distribution, then fine-tuning with UMedNeRF's learned uncertainty weights
  normalized to sum to 1, stopped by the discrepancy principle at the MAP residual the prior
  leaves on validation subjects, measured when it was trained; the GRAF prior has no learned
  latent distribution, so its fine-tuning runs every step); the grid prior also with its MAP
  code alone, with every fine-tuning step (no discrepancy stop) under UMedNeRF's fixed weights
  (Table 3: 0.6/0.4, 0.5/0.5, 0.4/0.6 for MSE/structural), the learned weights as published
  (``weighting="uncertainty"``) and normalized, and with the 4 December default (a 4-start latent
  search of 150 steps each before every fine-tuning step).

Columns: 2D PSNR/SSIM over the 71 unseen views (data range: the subject's largest true line
integral), 3D PSNR/SSIM of the volume (64^3 over the 400 mm scene cube, min-max normalized with
the truth, data range 1), fit seconds. FID/KID of all methods' unseen views against the true
views use a fixed random CNN (relative figures: no Inception weights on this machine).

The example CT (a real chest the priors never saw) is reconstructed from its PA DRR by the same
methods (its volume resampled onto the scene cube is the truth) and drawn with the held-out
subjects in ``benchmarks/results/single_view.png``.

    python benchmarks/single_view.py                                 # 2 x 12-minute priors, 8 subjects
    python benchmarks/single_view.py --minutes 1 --held_out 1 --subjects 8   # quick look
    python benchmarks/single_view.py --subjects 256 --shape_dim 128 --grid_size 64   # a finer grid prior

Prints a table and writes benchmarks/results/single_view.json and single_view.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from monai_gnerf.config import config_to_dict
from monai_gnerf.data import HELD_OUT_START, VALIDATION_START, PhantomPopulation, PhantomViewDataset, example_ct_path
from monai_gnerf.data.phantoms import centered_grid
from monai_gnerf.apps import single_view_figure
from monai_gnerf.engines import LatentPrior, SingleViewConfig, copy_input_views, fit_single_view
from monai_gnerf.geometry import load_geometry, volume_center_mm
from monai_gnerf.io import load_ct, load_projections, save_projections
from monai_gnerf.metrics import (
    RandomConvFeatures,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
    normalize_to_reference,
    psnr,
    ssim,
)
from monai_gnerf.networks import GeneratorConfig, PCAVolumeModel, load_generator
from monai_gnerf.physics import hu_to_attenuation
from monai_gnerf.data.population import VolumeSubject
from monai_gnerf.render import render_drr, sample_volume_at

RESULTS = Path(__file__).parent / "results"
VOLUME_SIZE = 64
FIXED_WEIGHTS = ((0.6, 0.4), (0.5, 0.5), (0.4, 0.6))
FIT = SingleViewConfig()  # what `monai-gnerf single-view` does by default
EVERY_STEP = replace(FIT, discrepancy=None)  # fine-tuning without the discrepancy stop
DEFAULT_LABEL = "default: MAP code + fine-tuning to the discrepancy target"
MAP_ONLY_LABEL = "Gauss-Newton MAP code only (no fine-tuning)"
SEARCH_LABEL = "4-start search + every fine-tuning step (the 4 Dec default)"
GRID_OPTIONS = ("shape_dim", "grid_size", "decoder_size")  # the grid prior's sizes, the library's defaults unless given


def unseen_psnr(views: torch.Tensor, truth: torch.Tensor) -> float:
    """2D PSNR over the unseen views (all but view 0), data range = largest true value."""
    return psnr(views[1:], truth[1:], float(truth.max()))


def view_metrics(views: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """2D PSNR (:func:`unseen_psnr`) and mean SSIM over the unseen views, same data range."""
    unseen = range(1, truth.shape[0])
    ssim_2d = sum(ssim(views[v], truth[v], float(truth.max())) for v in unseen) / len(unseen)
    return {"psnr_2d": unseen_psnr(views, truth), "ssim_2d": ssim_2d}


def volume_metrics(volume: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    estimate, reference = normalize_to_reference(volume, truth)
    return {"psnr_3d": psnr(estimate, reference, 1.0), "ssim_3d": ssim(estimate, reference, 1.0)}


def cube_points(extent_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel centres ``(n, n, n, 3)`` of the generator's volume grid and its affine."""
    return centered_grid((VOLUME_SIZE,) * 3, (2.0 * extent_mm / VOLUME_SIZE,) * 3)


class TrainedPrior:
    """A generator file written by ``monai-gnerf train-prior``, with its learned latent distribution."""

    def __init__(self, path: Path) -> None:
        self.generator, self.geometry, self.extra = load_generator(path)
        self.iterations, self.seconds = self.extra["iterations"], self.extra["seconds"]
        self.latent_prior = LatentPrior.of_generator(self.generator, self.extra)


def train(name: str, args, work: Path, *flags: str) -> TrainedPrior:
    """Train a prior the way a user does: ``monai-gnerf train-prior`` (its log in ``work/name.log``)."""
    out = work / name
    command = ["monai-gnerf", "train-prior", "--out", str(out), "--data", "phantoms", "--subjects", str(args.subjects),
               "--detector_size", str(args.detector), "--budget_s", str(60.0 * args.minutes),
               "--max_iterations", "1000000", "--checkpoint_every", "500", "--sample_every", "500", *flags]  # fmt: skip
    print("$", " ".join(command), flush=True)
    with open(work / f"{name}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return TrainedPrior(out / "generator.pt")


def cli_single_view(work: Path, prior_path: Path, example_views: torch.Tensor, orbit) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``monai-gnerf single-view`` on the example CT's PA DRR: what a user gets (views, volume in 1/mm, seconds)."""
    xray_dir = save_projections(work / "example_pa", example_views[:1], orbit.with_uniform_angles(1))
    out = work / "example_cli"
    command = ["monai-gnerf", "single-view", str(xray_dir / "png" / "view_000.png"), str(prior_path), "--out", str(out),
               "--units", "mu", "--volume_size", str(VOLUME_SIZE)]  # fmt: skip
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(work / "example_cli.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    views, _ = load_projections(out / "views")
    volume = load_ct_free_volume(out / "volume.nii.gz")
    return views, volume, seconds


def load_ct_free_volume(path: Path) -> torch.Tensor:
    """A NIfTI volume's array (the single-view volume is in 1/mm with ``--units mu``)."""
    import nibabel as nib

    return torch.from_numpy(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32))


def prior_fit(prior: TrainedPrior, truth_view: torch.Tensor, config: SingleViewConfig):
    """Fit, then render the 72 views (line integrals) and the volume on the cube grid."""
    start = time.perf_counter()
    fit = fit_single_view(prior.generator, prior.geometry, truth_view, config, progress=False,
                          latent_prior=prior.latent_prior)  # fmt: skip
    seconds = time.perf_counter() - start
    with torch.no_grad():
        views = fit.generator.render_views(fit.z_shape, fit.z_appearance, prior.geometry)
        volume, _ = fit.generator.volume(fit.z_shape, fit.z_appearance, (VOLUME_SIZE,) * 3)
    return views * prior.generator.config.value_scale, volume, seconds, {
        "task_weights": list(fit.task_weights), "steps": len(fit.history), "target_mse": fit.target_mse}


def choose_noise_variance(pca: PCAVolumeModel, population, geometry, points) -> float:
    """The PCA fit's noise variance that scores best on validation subjects (never test subjects):
    the highest mean of the 2D PSNR (71 unseen views) and the 3D PSNR, so neither metric is favoured."""
    candidates = (1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0, 100.0)
    scores = dict.fromkeys(candidates, 0.0)
    for subject in range(VALIDATION_START, VALIDATION_START + 4):
        data = PhantomViewDataset(population, geometry, [subject])
        truth_views, truth = data.views(0), data.subject(0).density(points).float()
        for noise in candidates:
            fitted, _ = pca.fit_views(data.geometry, truth_views[:1], noise_variance=noise)
            view_psnr = unseen_psnr(render_drr(fitted, data.geometry), truth_views)  # no SSIM: unused here
            scores[noise] += view_psnr + volume_metrics(fitted.as_tensor(), truth)["psnr_3d"]
    return max(scores, key=scores.get)


def evaluate_case(case: str, truth_views, truth_volume, methods, rows) -> dict[str, tuple]:
    """Every method on one case; appends rows and returns the outputs for the figure."""
    outputs = {}
    for method, run in methods.items():
        views, volume, seconds, extra = run(truth_views, truth_volume)
        outputs[method] = (views, volume)
        rows.append({"case": case, "method": method, "seconds": seconds, **extra,
                     "psnr_2d_input_view": psnr(views[0], truth_views[0], float(truth_views.max())),
                     **view_metrics(views, truth_views), **volume_metrics(volume, truth_volume)})  # fmt: skip
        print(f"  {case:>10} {method:<34} 2D {rows[-1]['psnr_2d']:6.2f} dB  3D {rows[-1]['psnr_3d']:6.2f} dB"
              f"  {seconds:5.1f} s", flush=True)  # fmt: skip
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget of each prior")
    parser.add_argument("--subjects", type=int, default=64, help="training subjects")
    parser.add_argument("--held_out", type=int, default=8, help="held-out subjects reconstructed")
    parser.add_argument("--detector", type=int, default=64, help="detector pixels per side")
    parser.add_argument("--work", default="outputs/bench_single_view", help="checkpoints and generators")
    for option in GRID_OPTIONS:
        default = getattr(GeneratorConfig(), option)
        parser.add_argument(f"--{option}", type=int, default=default, help=f"{option} of the grid prior (default {default})")
    args = parser.parse_args()
    work = Path(args.work)

    geometry = load_geometry("mednerf_chest").with_detector_shape(args.detector, args.detector)
    population = PhantomPopulation("chest", seed=0)
    train_set = PhantomViewDataset(population, geometry, range(args.subjects))
    work.mkdir(parents=True, exist_ok=True)
    graf = train("graf", args, work, "--architecture", "graf", "--view_weight", "0", "--volume_weight", "0")
    grid_options = [word for option in GRID_OPTIONS for word in (f"--{option}", str(getattr(args, option)))]
    grid = train("grid", args, work, *grid_options)  # grid generator, PCA start, view and 3D terms
    extent = grid.generator.config.extent_mm
    orbit = grid.geometry
    points, affine = cube_points(extent)

    train_views = torch.stack([train_set.views(i) for i in range(args.subjects)])
    train_volumes = torch.stack([train_set.subject(i).density(points).float() for i in range(args.subjects)])
    mean_views, mean_volume = train_views.mean(0), train_volumes.mean(0)
    pca = PCAVolumeModel.from_volumes(train_volumes, affine)
    noise = choose_noise_variance(pca, population, geometry, points)
    print(f"PCA: {pca.num_components} components, noise variance {noise:g} (chosen on validation subjects)")

    def pca_fit(truth_views, _):
        start = time.perf_counter()
        fitted, _ = pca.fit_views(orbit, truth_views[:1], noise_variance=noise)
        return render_drr(fitted, orbit), fitted.as_tensor(), time.perf_counter() - start, {}

    methods = {
        "copy input": lambda v, _: (copy_input_views(v[0], v.shape[0]), mean_volume, 0.0, {}),
        "population mean": lambda v, _: (mean_views, mean_volume, 0.0, {}),
        "PCA fit": pca_fit,
    }
    fixed = [(f"every fine-tuning step, fixed {m}/{w}", replace(EVERY_STEP, weighting="fixed", mse_weight=m, structural_weight=w))
             for m, w in FIXED_WEIGHTS]  # fmt: skip
    learned = [("every fine-tuning step, learned weights (UMedNeRF)", replace(EVERY_STEP, weighting="uncertainty")),
               ("every fine-tuning step, learned weights normalized", EVERY_STEP)]  # fmt: skip
    searched = (SEARCH_LABEL, replace(EVERY_STEP, restarts=4, latent_iterations=150))
    map_only = (MAP_ONLY_LABEL, replace(FIT, finetune_iterations=0))
    for name, prior, weightings in (("GRAF prior", graf, [(DEFAULT_LABEL, FIT)]),
                                    ("grid prior", grid, [map_only, (DEFAULT_LABEL, FIT), *fixed, *learned, searched])):  # fmt: skip
        for label, fit in weightings:

            def run(truth_views, _, prior=prior, fit=fit):
                return prior_fit(prior, truth_views[0], fit)

            methods[f"{name} + {label}"] = run

    rows: list[dict] = []
    figure_cases = []
    unseen: dict[str, list[torch.Tensor]] = {method: [] for method in methods}
    true_unseen = []
    for subject in range(HELD_OUT_START, HELD_OUT_START + args.held_out):
        held = PhantomViewDataset(population, geometry, [subject])
        truth_views, truth_volume = held.views(0), held.subject(0).density(points).float()
        outputs = evaluate_case(str(subject), truth_views, truth_volume, methods, rows)
        true_unseen.append(truth_views[1::6])
        for method, (views, _) in outputs.items():
            unseen[method].append(views[1::6])
        if subject < HELD_OUT_START + 2:
            best = outputs[f"grid prior + {DEFAULT_LABEL}"]
            figure_cases.append((f"subject {subject} (grid prior)", truth_views, best[0], truth_volume, best[1]))

    # the example CT: real anatomy no prior saw (its isocenter is its volume centre)
    ct = load_ct(example_ct_path())
    mu = hu_to_attenuation(ct.as_tensor().float())
    centre = volume_center_mm(ct.affine, ct.shape)
    ct_volume = sample_volume_at(mu, ct.affine, points + centre).float()
    example = VolumeSubject(ct_volume, affine)
    example_views = example.line_integrals(*orbit.rays(dtype=torch.float64)).float()
    example_rows: list[dict] = []
    outputs = evaluate_case("example CT", example_views, ct_volume, methods, example_rows)
    cli_views, cli_volume, cli_seconds = cli_single_view(work, work / "grid" / "generator.pt", example_views, orbit)
    example_rows.append({"case": "example CT", "method": "grid prior via monai-gnerf single-view (CLI)",
                         "seconds": cli_seconds, **view_metrics(cli_views, example_views),
                         **volume_metrics(cli_volume, ct_volume)})  # fmt: skip
    figure_cases.append(("example CT (monai-gnerf single-view)", example_views, cli_views, ct_volume, cli_volume))

    summary = {}
    for method in methods:
        chosen = [r for r in rows if r["method"] == method]
        summary[method] = {k: sum(r[k] for r in chosen) / len(chosen)
                           for k in ("psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "seconds")}  # fmt: skip
    # distribution metrics of the unseen views (every 6th), all held-out subjects at once
    extractor = RandomConvFeatures(64)
    truths = torch.cat(true_unseen)
    scale = float(truths.max())
    f_true = extract_features((truths / scale).clamp(0, 1), extractor)
    generative = {}
    for method, views in unseen.items():
        f_method = extract_features((torch.cat(views) / scale).clamp(0, 1), extractor)
        kid = kernel_inception_distance(f_true, f_method, num_subsets=20, subset_size=min(50, f_true.shape[0]))
        generative[method] = {"fid_random_cnn": frechet_distance(f_true, f_method), "kid_random_cnn": kid}

    print(f"\npriors: GRAF {graf.iterations} iterations in {graf.seconds:.0f} s, grid {grid.iterations} iterations in "
          f"{grid.seconds:.0f} s, {args.subjects} training subjects, {args.held_out} held-out, 2 threads")  # fmt: skip
    print("| method | 2D PSNR dB (71 unseen views) | 2D SSIM | 3D PSNR dB | 3D SSIM | fit s | FID (rand. CNN) | KID |")
    print("|---|---|---|---|---|---|---|---|")
    for method, m in summary.items():
        g = generative[method]
        print(f"| {method} | {m['psnr_2d']:.2f} | {m['ssim_2d']:.3f} | {m['psnr_3d']:.2f} | {m['ssim_3d']:.3f} | "
              f"{m['seconds']:.0f} | {g['fid_random_cnn']:.4f} | {g['kid_random_cnn'][0]:.5f} |")  # fmt: skip
    print("\nexample CT (real anatomy, never seen in training), from its PA DRR:")
    for r in example_rows:
        print(f"| {r['method']} | {r['psnr_2d']:.2f} | {r['ssim_2d']:.3f} | {r['psnr_3d']:.2f} | {r['ssim_3d']:.3f} |")
    RESULTS.mkdir(exist_ok=True)
    single_view_figure(RESULTS / "single_view.png", figure_cases, affine)
    out = {"machine": platform.platform(), "threads": torch.get_num_threads(), "args": vars(args),
           "priors": {name: {"iterations": p.iterations, "seconds": p.seconds, "config": p.extra["config"],
                             "map_residual_mse": p.extra.get("map_residual_mse")}
                      for name, p in (("graf", graf), ("grid", grid))},
           "pca": {"components": pca.num_components, "noise_variance": noise},
           "fit": config_to_dict(FIT), "summary": summary, "generative": generative, "rows": rows,
           "example_ct": example_rows}  # fmt: skip
    (RESULTS / "single_view.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'single_view.json'} and {RESULTS / 'single_view.png'}")


if __name__ == "__main__":
    main()
