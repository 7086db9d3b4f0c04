"""Single-view reconstruction with a generative prior: fixed vs learned uncertainty weights.

Trains a prior on the procedural chest population (subjects 0..N-1) for a fixed CPU budget, then
reconstructs held-out subjects (indices from 10_000, never seen in training) from ONE view (PA,
view 0) with the MedNeRF fixed loss weights and with UMedNeRF's learned uncertainty weights
(the paper's Table 3 ablation). Reported: 2D PSNR/SSIM over the 71 unseen views of the 72-view
orbit (data range: the subject's largest true line integral), 3D PSNR/SSIM of the sampled
volume (min-max normalized with the truth, data range 1), against the trivial baseline of the
training population's mean (mean views per angle, mean volume). FID/KID of random prior samples
against training views use a fixed random CNN extractor (relative figures only: no Inception
weights on this machine).

    python benchmarks/single_view.py                 # 20-minute prior, 4 held-out subjects
    python benchmarks/single_view.py --minutes 2 --held_out 1   # quick look

Prints a table and writes benchmarks/results/single_view.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from monai_gnerf.data import PhantomPopulation, PhantomViewDataset
from monai_gnerf.engines import PriorConfig, SingleViewConfig, fit_single_view, train_prior
from monai_gnerf.geometry import load_geometry
from monai_gnerf.metrics import (
    RandomConvFeatures,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
    normalize_to_reference,
    psnr,
    ssim,
)
from monai_gnerf.networks import save_generator
from monai_gnerf.networks.generator import GeneratorConfig

RESULTS = Path(__file__).parent / "results"
HELD_OUT_START = 10_000
VOLUME_SIZE = 64


def view_metrics(views: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """2D PSNR/SSIM over the unseen views (all but view 0), data range = largest true value."""
    data_range = float(truth.max())
    unseen = range(1, truth.shape[0])
    return {
        "psnr_2d": psnr(views[1:], truth[1:], data_range),
        "ssim_2d": sum(ssim(views[v], truth[v], data_range) for v in unseen) / len(unseen),
    }


def volume_metrics(volume: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    estimate, reference = normalize_to_reference(volume, truth)
    return {"psnr_3d": psnr(estimate, reference, 1.0), "ssim_3d": ssim(estimate, reference, 1.0)}


def truth_volume(population: PhantomPopulation, subject: int, extent_mm: float) -> torch.Tensor:
    spacing = 2.0 * extent_mm / VOLUME_SIZE  # the generator's volume grid (centred, same spacing)
    return population.subject(subject).voxelize((VOLUME_SIZE,) * 3, (spacing,) * 3).as_tensor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="prior training budget")
    parser.add_argument("--subjects", type=int, default=32, help="training subjects")
    parser.add_argument("--held_out", type=int, default=4, help="held-out subjects reconstructed")
    parser.add_argument("--detector", type=int, default=64, help="detector pixels per side")
    parser.add_argument("--work", default="outputs/bench_single_view", help="checkpoints and generator")
    args = parser.parse_args()

    geometry = load_geometry("mednerf_chest").with_detector_shape(args.detector, args.detector)
    population = PhantomPopulation("chest", seed=0)
    train = PhantomViewDataset(population, geometry, range(args.subjects))
    config = PriorConfig(generator=GeneratorConfig(), patch_size=16, batch_size=8, min_scale=0.25,
                         anneal_iterations=2000, max_iterations=1_000_000, budget_s=60.0 * args.minutes,
                         checkpoint_every=500, sample_every=500)  # fmt: skip
    prior = train_prior(train, geometry, config, work_dir=Path(args.work) / "checkpoints")
    save_generator(Path(args.work) / "generator.pt", prior.generator, prior.geometry)
    value_scale = prior.generator.config.value_scale
    extent = prior.generator.config.extent_mm
    orbit = prior.geometry

    # population-mean baseline (training subjects only)
    train_views = torch.stack([train.views(i) for i in range(args.subjects)])
    mean_views = train_views.mean(0)
    mean_volume = torch.stack([truth_volume(population, s, extent) for s in range(args.subjects)]).mean(0)

    # generative metrics of random samples vs training views (relative, random-CNN features)
    extractor = RandomConvFeatures(64)
    rng = torch.Generator().manual_seed(1)
    with torch.no_grad():
        samples = torch.cat([prior.generator.render_views(*prior.generator.sample_latents(1, rng), orbit,
                                          torch.tensor([0.0, 90.0, 180.0, 270.0])) for _ in range(32)])  # fmt: skip
    real = train_views[:, ::18].reshape(-1, *train_views.shape[-2:]) / value_scale
    f_real, f_fake = extract_features(real, extractor), extract_features(samples, extractor)
    f_mean = extract_features(mean_views[::18].repeat(32, 1, 1) / value_scale, extractor)
    generative = {
        "fid_random_cnn": frechet_distance(f_real, f_fake),
        "kid_random_cnn": kernel_inception_distance(f_real, f_fake, num_subsets=50, subset_size=100),
        "fid_random_cnn_population_mean": frechet_distance(f_real, f_mean),
    }

    rows = []
    for subject in range(HELD_OUT_START, HELD_OUT_START + args.held_out):
        held = PhantomViewDataset(population, geometry, [subject])
        truth = held.views(0)
        volume_truth = truth_volume(population, subject, extent)
        rows.append({"subject": subject, "method": "population mean", "seconds": 0.0,
                     **view_metrics(mean_views, truth), **volume_metrics(mean_volume, volume_truth)})  # fmt: skip
        for weighting in ("fixed", "uncertainty"):
            start = time.perf_counter()
            fit_config = SingleViewConfig(weighting=weighting, restarts=2, latent_iterations=60, finetune_iterations=80)
            fit = fit_single_view(prior.generator, orbit, truth[0], fit_config, progress=False)
            with torch.no_grad():
                views = fit.generator.render_views(fit.z_shape, fit.z_appearance, orbit) * value_scale
                volume, _ = fit.generator.volume(fit.z_shape, fit.z_appearance, (VOLUME_SIZE,) * 3)
            rows.append({"subject": subject, "method": f"prior + {weighting} weights",
                         "seconds": time.perf_counter() - start, "task_weights": list(fit.task_weights),
                         "psnr_2d_seen_view": psnr(views[0], truth[0], float(truth.max())),
                         **view_metrics(views, truth), **volume_metrics(volume, volume_truth)})  # fmt: skip

    methods = ["population mean", "prior + fixed weights", "prior + uncertainty weights"]
    summary = {}
    for method in methods:
        chosen = [r for r in rows if r["method"] == method]
        summary[method] = {k: sum(r[k] for r in chosen) / len(chosen) for k in ("psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "seconds")}
    print(f"\nprior: {prior.iterations} iterations in {prior.seconds:.0f} s on {args.subjects} subjects")
    print("| method | 2D PSNR dB (71 unseen views) | 2D SSIM | 3D PSNR dB | 3D SSIM | fit s |\n|---|---|---|---|---|---|")
    for method, m in summary.items():
        print(f"| {method} | {m['psnr_2d']:.2f} | {m['ssim_2d']:.3f} | {m['psnr_3d']:.2f} | {m['ssim_3d']:.3f} | {m['seconds']:.0f} |")
    print(f"random-CNN FID samples vs training views: {generative['fid_random_cnn']:.4f} "
          f"(population mean images: {generative['fid_random_cnn_population_mean']:.4f}); "
          f"KID {generative['kid_random_cnn'][0]:.5f} +- {generative['kid_random_cnn'][1]:.5f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": platform.platform(), "threads": torch.get_num_threads(), "args": vars(args),
           "prior": {"iterations": prior.iterations, "seconds": prior.seconds, "config": config.to_dict()},
           "summary": summary, "rows": rows, "generative": generative}  # fmt: skip
    (RESULTS / "single_view.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'single_view.json'}")


if __name__ == "__main__":
    main()
