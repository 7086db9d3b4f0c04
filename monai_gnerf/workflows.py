"""End-to-end workflows used by the CLI, the MONAI bundle and the Slicer module.

* :func:`simulate_drrs`: CT file -> projection folder (``monai-gnerf drr``).
* :func:`reconstruct_folder`: projection folder -> NIfTI volume (``monai-gnerf reconstruct``).
* :func:`sparse_view_demo`: the README's main job on the embedded CT (``monai-gnerf demo``).
* :func:`train_prior_workflow`: train a generative prior (``monai-gnerf train-prior``).
* :func:`single_view_reconstruction`: one X-ray -> 72 views + volume (``monai-gnerf single-view``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch

from PIL import Image
from torch.utils.data import Dataset

from monai_gnerf.data import example_ct_path, resolve_ct_path
from monai_gnerf.datasets import CTViewDataset, MedNeRFFolderDataset, PhantomViewDataset
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.figures import comparison_figure
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.grids import geometry_grid, grid_for_spacing, resample_area, resample_nearest
from monai_gnerf.io import atomic_output_dir, atomic_output_file, load_ct, save_volume
from monai_gnerf.masks import silhouette_mask
from monai_gnerf.physics import MU_WATER_PER_MM, add_detector_noise, attenuation_to_hu
from monai_gnerf.population import PhantomPopulation
from monai_gnerf.prior import PriorConfig, load_generator, render_views, save_generator, train_prior
from monai_gnerf.projections import load_projections, save_projections
from monai_gnerf.reconstruction import ReconstructionConfig, ReconstructionResult, config_to_dict, reconstruct
from monai_gnerf.rendering import RenderMethod
from monai_gnerf.single_view import SingleViewConfig, fit_single_view
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation
from monai_gnerf.xray import load_xray, to_model_detector

__all__ = [
    "prior_dataset",
    "reconstruct_folder",
    "resolve_ct_path",
    "simulate_drrs",
    "single_view_reconstruction",
    "sparse_view_demo",
    "train_prior_workflow",
]

Units = Literal["hu", "mu"]
_LOGGER = logging.getLogger("monai_gnerf.workflows")


def _to_units(volume_mu: torch.Tensor, units: Units, mu_water_per_mm: float) -> torch.Tensor:
    if units == "hu":
        return attenuation_to_hu(volume_mu, mu_water_per_mm)
    if units == "mu":
        return volume_mu
    raise GnerfInputError(f"units must be 'hu' or 'mu', got {units!r}.")


def simulate_drrs(
    ct: str | Path,
    geometry: str | Path | ProjectionGeometry,
    out: str | Path,
    method: RenderMethod = "joseph",
    step_mm: float | None = None,
    mu_water_per_mm: float = MU_WATER_PER_MM,
    noise_i0: float | None = None,
    num_views: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Path:
    """Simulate a projection folder (see :mod:`monai_gnerf.projections`) from a CT in HU."""
    geo = load_geometry(geometry)
    if num_views is not None:
        geo = geo.with_uniform_angles(num_views)
    ct_path = resolve_ct_path(ct)
    volume = load_ct(ct_path).to(device)
    with torch.no_grad():
        drr = GenerateDRR(geo, method=method, step_mm=step_mm, progress=True)(HUToAttenuation(mu_water_per_mm)(volume))
    if noise_i0 is not None:
        drr = add_detector_noise(drr, i0_photons=noise_i0, generator=torch.Generator(drr.device).manual_seed(seed))
    resolved = load_geometry(drr.meta["geometry"])
    extra = {
        "source": str(ct_path.resolve()),
        "method": method,
        "mu_water_per_mm": mu_water_per_mm,
        "noise_i0": noise_i0,
        "volume_affine": volume.affine.tolist(),
        "volume_shape": list(volume.shape),
    }
    return save_projections(out, drr, resolved, extra)


def _grid_of_folder(meta: dict[str, Any], geometry: ProjectionGeometry, spacing_mm: float | None):
    """The source CT's grid when the folder records it, else the detector's field of view.

    Without ``spacing_mm`` the source grid is kept as it is (the output then has the CT's exact
    affine) unless its voxels are finer than the detector pixels at the isocenter, whose size is
    then used (the data hold no finer detail).
    """
    pixel_at_iso = geometry.pixel_spacing_mm[1] / geometry.magnification
    if "volume_affine" not in meta:
        return geometry_grid(geometry, spacing_mm)
    shape, affine = tuple(meta["volume_shape"]), torch.tensor(meta["volume_affine"], dtype=torch.float64)
    source_spacing = float(torch.linalg.vector_norm(affine[:3, :3], dim=0).min())
    if spacing_mm is None and source_spacing >= 0.75 * pixel_at_iso:
        return shape, affine
    return grid_for_spacing(shape, affine, spacing_mm or pixel_at_iso)


def _mask_for(
    mask: str, projections: torch.Tensor, geometry: ProjectionGeometry, shape, affine
) -> torch.Tensor | None:
    if mask == "none":
        return None
    if mask == "silhouette":
        return silhouette_mask(projections, geometry, shape, affine)
    path = Path(mask)
    if not path.exists():
        raise GnerfInputError(f"mask must be 'silhouette', 'none' or a mask file; {path} does not exist.")
    image = load_ct(path)
    return resample_nearest(image.as_tensor(), image.affine, shape, affine)


def reconstruct_folder(
    projections_dir: str | Path,
    out: str | Path,
    method: str = "grid",
    mask: str = "silhouette",
    budget_s: float | None = 120.0,
    iterations: int = 1500,
    spacing_mm: float | None = None,
    units: Units = "hu",
    work_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    mu_water_per_mm: float | None = None,
) -> ReconstructionResult:
    """Reconstruct a volume from a projection folder and write it as NIfTI (atomically).

    The output grid is the source CT's (when the folder records it) at the chosen spacing, so the
    NIfTI overlays the CT; otherwise the detector's field of view around the isocenter.
    """
    projections, geometry = load_projections(projections_dir)
    meta = dict(projections.meta)
    shape, affine = _grid_of_folder(meta, geometry, spacing_mm)
    support = _mask_for(mask, projections.as_tensor(), geometry, shape, affine)
    config = ReconstructionConfig(method=method, max_iterations=iterations, budget_s=budget_s)  # type: ignore[arg-type]
    result = reconstruct(
        projections.as_tensor(), geometry, shape, affine, config, mask=support,
        work_dir=work_dir, tensorboard_dir=tensorboard_dir, device=device,
    )  # fmt: skip
    mu_water = mu_water_per_mm or float(meta.get("mu_water_per_mm", MU_WATER_PER_MM))
    save_volume(out, _to_units(result.volume.as_tensor(), units, mu_water), affine)
    _LOGGER.info(f"wrote {out} ({units}), grid {shape}, {result.iterations} iterations in {result.seconds:.0f} s")
    return result


def sparse_view_demo(
    out: str | Path = "outputs/demo",
    views: int = 20,
    budget_s: float = 90.0,
    spacing_mm: float = 3.0,
    geometry: str | Path | ProjectionGeometry = "chest_cbct",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Simulate ``views`` cone-beam projections of the example CT, reconstruct them with FDK and
    with the masked grid field, and write volumes, a figure and ``metrics.json``.

    Projections come from the 2.5 mm example CT; reconstructions live on a different
    ``spacing_mm`` grid over the same field of view (no inverse crime), where the CT, area-
    averaged, is the ground truth. The mask is carved from the projections alone (mNeRF-style,
    3 mm margin), as a user without a CT would have it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ct = load_ct(example_ct_path())
    mu = HUToAttenuation()(ct)
    geo = load_geometry(geometry).with_uniform_angles(views)
    with torch.no_grad():
        projections = GenerateDRR(geo, progress=True)(mu.to(device))
    geo = load_geometry(projections.meta["geometry"])
    shape, affine = grid_for_spacing(ct.shape, ct.affine, spacing_mm)
    truth = resample_area(mu.as_tensor(), shape)
    support = silhouette_mask(projections.as_tensor(), geo, shape, affine)
    results: dict[str, ReconstructionResult] = {}
    for method in ("fdk", "grid"):
        config = ReconstructionConfig(method=method, budget_s=budget_s, max_iterations=100_000)  # type: ignore[arg-type]
        results[method] = reconstruct(
            projections.as_tensor(), geo, shape, affine, config, mask=support, reference=truth, device=device
        )
    volumes_hu = {"truth": attenuation_to_hu(truth)}
    volumes_hu.update({name: attenuation_to_hu(r.volume.as_tensor().cpu()) for name, r in results.items()})
    paths = {name: save_volume(out / f"{name}.nii.gz", vol, affine) for name, vol in volumes_hu.items()}
    figure = comparison_figure(
        out / "figure.png", {"truth": volumes_hu["truth"], "FDK": volumes_hu["fdk"], "ours": volumes_hu["grid"]},
        affine, window=(-1000.0, 1000.0), reference="truth", error_window=300.0,
    )  # fmt: skip
    summary = {
        "views": views,
        "geometry": geo.to_dict(),
        "grid_shape": list(shape),
        "grid_spacing_mm": spacing_mm,
        "metrics": {name: {**r.metrics, "seconds": r.seconds, "iterations": r.iterations} for name, r in results.items()},
        "config": config_to_dict(ReconstructionConfig(budget_s=budget_s)),
        "outputs": {**{k: str(v) for k, v in paths.items()}, "figure": str(figure)},
    }
    with atomic_output_file(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    save_projections(out / "projections", projections.as_tensor(), geo, {"mu_water_per_mm": MU_WATER_PER_MM,
                     "volume_affine": ct.affine.tolist(), "volume_shape": list(ct.shape)})  # fmt: skip
    return summary


def prior_dataset(data: str | Path, geometry: ProjectionGeometry, subjects: int = 32, seed: int = 0) -> Dataset:
    """The training views named by ``data``.

    Args:
        data: ``"phantoms"`` / ``"phantoms:chest"`` / ``"phantoms:knee"`` (the procedural
            population), a MedNeRF-format folder (sub-folders of PNG views), or a CT file/folder.
        geometry: acquisition for phantoms and CTs (MedNeRF folders bring their own angles).
        subjects: number of phantom subjects (indices ``0 .. subjects-1``).
        seed: population seed.
    """
    text = str(data)
    if text.startswith("phantoms"):
        kind = text.split(":", 1)[1] if ":" in text else "chest"
        if kind not in ("chest", "knee"):
            raise GnerfInputError(f"unknown phantom population {kind!r}; use phantoms:chest or phantoms:knee.")
        return PhantomViewDataset(PhantomPopulation(kind, seed), geometry, range(subjects))  # type: ignore[arg-type]
    path = Path(text)
    if not path.exists():
        raise GnerfInputError(f"training data not found: {path} (use 'phantoms', a MedNeRF folder or CTs).")
    if path.is_dir() and any(d.is_dir() and any(d.glob("*.png")) for d in path.iterdir()):
        return MedNeRFFolderDataset(path)
    return CTViewDataset(path, geometry)


def _reference_max(dataset: Dataset, samples: int = 16) -> float:
    """Typical bright line integral of the training views (99.5th percentile over a sample)."""
    step = max(1, len(dataset) // samples)
    values = torch.cat([dataset[i]["image"].flatten() for i in range(0, len(dataset), step)])
    return float(torch.quantile(values[:: max(1, values.numel() // 200_000)], 0.995))


def train_prior_workflow(
    data: str | Path = "phantoms",
    geometry: str | Path | ProjectionGeometry = "mednerf_chest",
    out: str | Path = "outputs/prior",
    detector_size: int = 64,
    subjects: int = 32,
    config: PriorConfig | None = None,
    tensorboard_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Train a generative prior and write ``OUT/generator.pt`` (plus checkpoints and samples).

    The geometry's detector is resampled to ``detector_size`` pixels per side over the same
    physical size (CPU-sized training); ``OUT/checkpoints`` holds resumable checkpoints, so running
    the same command again continues the run. Returns the generator file.
    """
    out = Path(out)
    geo = load_geometry(geometry)
    geo = geo.with_detector_shape(detector_size, detector_size)
    dataset = prior_dataset(data, geo, subjects)
    config = config or PriorConfig()
    result = train_prior(dataset, geo, config, out / "checkpoints", tensorboard_dir, device)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return out / "generator.pt"
    extra = {"data": str(data), "subjects": subjects, "reference_max": _reference_max(dataset),
             "iterations": result.iterations, "seconds": result.seconds, "config": config.to_dict()}  # fmt: skip
    return save_generator(out / "generator.pt", result.generator, result.geometry, extra)


def _write_gif(path: Path, views_display: torch.Tensor, duration_ms: int = 80) -> None:
    frames = (views_display.clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu().numpy()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def single_view_reconstruction(
    xray: str | Path,
    checkpoint: str | Path,
    out: str | Path = "outputs/single_view",
    config: SingleViewConfig | None = None,
    num_views: int = 72,
    volume_size: int = 64,
    units: Units = "hu",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Reconstruct from one X-ray with a trained generator; write views, a GIF and a volume.

    Outputs (written atomically into ``out``): ``views/`` (a projection folder: NIfTI stack of
    ``num_views`` line-integral views over 360 degrees, 16-bit PNGs, geometry), ``views.gif``,
    ``volume.nii.gz`` (``volume_size``^3 over the generator's scene cube, isocenter at the world
    origin, in HU or 1/mm) and ``fit.json``.
    """
    generator, geometry, extra = load_generator(checkpoint, device)
    image = load_xray(xray)
    target = to_model_detector(image, geometry, float(extra.get("reference_max", generator.config.value_scale)))
    fit = fit_single_view(generator, geometry, target, config, device)
    views_geometry = geometry.with_uniform_angles(num_views, start_deg=fit.angle_deg)
    with torch.no_grad():
        views = render_views(fit.generator, fit.z_shape, fit.z_appearance, views_geometry)
        volume, affine = fit.generator.volume(fit.z_shape, fit.z_appearance, (volume_size,) * 3)
    summary = {
        "xray": str(xray),
        "checkpoint": str(checkpoint),
        "angle_deg": fit.angle_deg,
        "task_weights": {"mse": fit.task_weights[0], "structural": fit.task_weights[1]},
        "final_loss": fit.history[-1] if fit.history else None,
        "config": (config or SingleViewConfig()).to_dict(),
    }
    with atomic_output_dir(out) as staging:
        save_projections(staging / "views", views * generator.config.value_scale, views_geometry,
                         {"source": str(xray), "model": str(checkpoint)})  # fmt: skip
        _write_gif(staging / "views.gif", views)
        save_volume(staging / "volume.nii.gz", _to_units(volume.cpu(), units, MU_WATER_PER_MM), affine)
        (staging / "fit.json").write_text(json.dumps(summary, indent=2) + "\n")
    _LOGGER.info(f"wrote {out}: {num_views} views, volume {volume_size}^3 ({units})")
    return summary
