"""Sparse-view jobs: a projection folder -> a volume (``monai-gnerf reconstruct``,
``bundle/configs/reconstruct.json``), and the README's main job on the example CT (``monai-gnerf demo``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from monai_gnerf.apps.common import Units, check_device, to_units
from monai_gnerf.apps.drr import check_drr_memory
from monai_gnerf.apps.figures import comparison_figure, figure_path
from monai_gnerf.config import Config, PositiveFloat, PositiveInt, config_to_dict
from monai_gnerf.data import example_ct_path
from monai_gnerf.engines import (
    FIELD_BYTES_PER_VOXEL,
    FieldComponents,
    ReconstructionConfig,
    ReconstructionResult,
    field_grid,
    reconstruct,
)
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import (
    ProjectionGeometry,
    check_source_outside,
    geometry_grid,
    grid_for_spacing,
    load_geometry,
    resample_area,
    resample_nearest,
    volume_center_mm,
)
from monai_gnerf.io import (
    PROJECTION_FOLDER_CONTENTS,
    check_output,
    check_volume_path,
    write_json,
    save_dicom_series,
    load_ct,
    load_projections,
    save_projections,
    save_volume,
)
from monai_gnerf.physics import MU_WATER_PER_MM, attenuation_to_hu
from monai_gnerf.resources import check_memory
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation, silhouette_mask

__all__ = ["DemoConfig", "SparseViewJobConfig", "reconstruct_folder", "sparse_view_demo"]

_LOGGER = logging.getLogger(__name__)


@dataclass
class SparseViewJobConfig(Config):
    """Options of :func:`reconstruct_folder`.

    Args:
        mask: 'silhouette' (carved from the projections, 3 mm margin), 'none', or a mask file.
        spacing_mm: output voxel size in mm (default: the data's natural resolution).
        units: 'hu' or 'mu' (attenuation in 1/mm).
        mu_water_per_mm: attenuation of water for HU output (default: the value the projections
            were simulated with, else the standard one).
        fit: the reconstruction method and its budgets.
    """

    mask: str = "silhouette"
    spacing_mm: PositiveFloat | None = None
    units: Units = "hu"
    mu_water_per_mm: PositiveFloat | None = None
    fit: ReconstructionConfig = field(default_factory=ReconstructionConfig)


def _grid_of_folder(meta: dict[str, Any], geometry: ProjectionGeometry, spacing_mm: float | None):
    """The source CT's grid when the folder records it, else the detector's field of view.

    Without ``spacing_mm`` the source grid is kept as it is (the output then has the CT's exact
    affine) unless its voxels are finer than the detector pixels at the isocenter, whose size is
    then used (the data hold no finer detail).
    """
    pixel_at_iso = geometry.pixel_spacing_at_isocenter_mm[1]
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
    image = load_ct(path, "mask")
    support = resample_nearest(image.as_tensor(), image.affine, shape, affine)
    if not (support > 0).any():
        raise GnerfInputError(f"mask {path} has no voxel > 0 on the reconstruction grid: nothing would be reconstructed.")
    return support


def reconstruct_folder(
    projections_dir: str | Path,
    out: str | Path = "reconstruction.nii.gz",
    config: SparseViewJobConfig | None = None,
    device: str | torch.device = "cpu",
    work_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    overwrite: bool = False,
    dicom_dir: str | Path | None = None,
    components: FieldComponents | None = None,
) -> ReconstructionResult:
    """Reconstruct a CT volume from a projection folder (as written by `monai-gnerf drr`).

    The folder needs geometry.json and projections.nii.gz (or PNG views). The volume is written
    (atomically) as NIfTI, or as NRRD / MHA when OUT ends in .nrrd / .mha, on the source CT's grid when the folder records it (so it overlays the
    CT), else on the detector's field of view around the isocenter; beside it a PNG of its
    central axial, coronal and sagittal slices (``recon.nii.gz`` -> ``recon.png``).

    Args:
        projections_dir: projection folder.
        out: output NIfTI path.
        config: reconstruction options.
        device: 'cpu', 'cuda' or 'cuda:N'.
        work_dir: folder for checkpoints; a run there resumes from its last checkpoint.
        tensorboard_dir: write TensorBoard logs here.
        overwrite: replace an existing OUT, and start afresh when WORK_DIR holds checkpoints of
            other inputs (without it such a run is refused).
        dicom_dir: also write the volume (HU) as a DICOM CT series into this folder; when the
            projections were simulated from a DICOM CT, the series joins its patient and study.
        components: the field, optimizer, projector and extra handlers instead of the defaults
            (Python only: ``reconstruct.json`` builds them; see :class:`~monai_gnerf.engines.FieldComponents`).
    """
    config = config or SparseViewJobConfig()
    device = check_device(device)
    projections, geometry = load_projections(projections_dir)
    if geometry.isocenter_mm is None:
        raise GnerfInputError(f"{Path(projections_dir) / 'geometry.json'} has no isocenter_mm: a projection folder's "
                              "geometry must say where the rotation centre is, in world mm (monai-gnerf drr writes it).")  # fmt: skip
    meta = dict(projections.meta)
    shape, affine = _grid_of_folder(meta, geometry, config.spacing_mm)
    voxels = math.prod(shape)
    _check_grid(shape, affine, config.fit, geometry, projections.as_tensor())
    inputs = [Path(projections_dir) / name for name in PROJECTION_FOLDER_CONTENTS]
    check_volume_path(check_output(out, "file", overwrite, estimated_bytes=4 * voxels, inputs=inputs))
    check_output(figure_path(out), "file", overwrite, inputs=inputs)
    if dicom_dir is not None:
        check_output(dicom_dir, "dir", overwrite, option="--dicom_dir", estimated_bytes=2 * voxels)
    for folder, option in ((work_dir, "--work_dir"), (tensorboard_dir, "--tensorboard_dir")):
        if folder is not None:
            check_output(folder, "dir", overwrite=True, option=option)
    support = _mask_for(config.mask, projections.as_tensor(), geometry, shape, affine)
    result = reconstruct(
        projections.as_tensor(), geometry, shape, affine, config.fit, mask=support,
        work_dir=work_dir, tensorboard_dir=tensorboard_dir, device=device, restart=overwrite, components=components,
    )  # fmt: skip
    mu_water = config.mu_water_per_mm or float(meta.get("mu_water_per_mm", MU_WATER_PER_MM))
    volume = to_units(result.volume.as_tensor(), config.units, mu_water)
    save_volume(out, volume, affine)
    window = (-1000.0, 1000.0) if config.units == "hu" else (0.0, 2.0 * mu_water)
    comparison_figure(figure_path(out), {f"{config.fit.method}, {geometry.num_views} views": volume}, affine, window)
    if dicom_dir is not None:
        hu = to_units(result.volume.as_tensor(), "hu", mu_water)
        save_dicom_series(dicom_dir, hu, affine, meta.get("source_dicom"), f"monai-gnerf {config.fit.method}, {geometry.num_views} views")
    _LOGGER.info(f"wrote {out} ({config.units}), grid {shape}, {result.iterations} iterations in {result.seconds:.0f} s")
    return result


def _check_grid(
    shape: Sequence[int], affine: torch.Tensor, fit: ReconstructionConfig, geometry: ProjectionGeometry,
    projections: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """Refuse a reconstruction grid that the X-ray source enters in some view, or that would not fit
    in memory: first the grid as fine as ``fit`` and the detector say, then also as long as the
    projections say (without them, as long as the geometry may need; the end-face margins are
    worked out only for a grid that fits), then the ray batch of one iteration. A geometry without
    an isocenter is centred on the grid, as DRRs of it will be."""
    if geometry.isocenter_mm is None:
        geometry = geometry.resolved(volume_center_mm(affine, shape).tolist())
    check_source_outside(geometry, shape, affine)
    for grid in (field_grid(replace(fit, axial_margin_mm=0.0), geometry, shape, affine),
                 field_grid(fit, geometry, shape, affine, projections)):  # fmt: skip
        details = [f"fitted {grid.factor}x finer (supersample {grid.factor})"] if grid.factor > 1 else []
        if any(grid.margin):
            details.append(f"extended by {grid.margin[0]} + {grid.margin[1]} voxels past its end faces")
        described = "".join(f", {d}" for d in details) + ("," if details else "")
        check_memory(FIELD_BYTES_PER_VOXEL * math.prod(grid.shape), f"a {'x'.join(map(str, shape))} reconstruction grid{described}")
    check_memory(fit.batch_bytes, f"a batch of {fit.batch} rays of {fit.samples_per_ray} samples ({fit.method})")


def _demo_fit() -> ReconstructionConfig:
    return ReconstructionConfig(budget_s=90.0, max_iterations=100_000)


@dataclass
class DemoConfig(Config):
    """Options of :func:`sparse_view_demo`.

    Args:
        views: number of projections over 360 degrees.
        spacing_mm: voxel size of the reconstruction grid, mm.
        geometry: preset name or geometry JSON file of the simulated scanner.
        fit: reconstruction budgets of the trained method (FDK needs none).
    """

    views: PositiveInt = 20
    spacing_mm: PositiveFloat = 3.0
    geometry: str = "chest_cbct"
    fit: ReconstructionConfig = field(default_factory=_demo_fit)


def sparse_view_demo(
    out: str | Path = "outputs/demo", config: DemoConfig | None = None, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The main job: sparse-view reconstruction of the embedded example chest CT.

    Simulates VIEWS cone-beam X-rays of the 2.5 mm example CT, reconstructs them with FDK and with
    the masked grid field on a SPACING_MM grid over the same field of view (no inverse crime:
    the CT, area-averaged, is the ground truth), and writes truth/fdk/grid NIfTI volumes (HU,
    overlaying the CT), figure.png, metrics.json and the projections used. The mask is carved
    from the projections alone (mNeRF-style, 3 mm margin), as a user without a CT would have it.

    Args:
        out: output folder.
        config: demo options.
        device: 'cpu', 'cuda' or 'cuda:N'.
    """
    config = config or DemoConfig()
    device = check_device(device)
    out = Path(out)
    ct = load_ct(example_ct_path())
    geo = load_geometry(config.geometry).with_uniform_angles(config.views)
    check_drr_memory(geo, ct)
    shape, affine = grid_for_spacing(ct.shape, ct.affine, config.spacing_mm)
    _check_grid(shape, affine, config.fit, geo)
    out.mkdir(parents=True, exist_ok=True)
    mu = HUToAttenuation()(ct)
    with torch.no_grad():
        projections = GenerateDRR(geo, progress=True)(mu.to(device))
    geo = load_geometry(projections.meta["geometry"])
    truth = resample_area(mu.as_tensor(), shape)
    support = silhouette_mask(projections.as_tensor(), geo, shape, affine)
    results: dict[str, ReconstructionResult] = {}
    for method in ("fdk", "grid"):
        fit = replace(config.fit, method=method)
        results[method] = reconstruct(
            projections.as_tensor(), geo, shape, affine, fit, mask=support, reference=truth, device=device
        )
    volumes_hu = {"truth": attenuation_to_hu(truth)}
    volumes_hu.update({name: attenuation_to_hu(r.volume.as_tensor().cpu()) for name, r in results.items()})
    paths = {name: save_volume(out / f"{name}.nii.gz", vol, affine) for name, vol in volumes_hu.items()}
    figure = comparison_figure(
        out / "figure.png", {"truth": volumes_hu["truth"], "FDK": volumes_hu["fdk"], "ours": volumes_hu["grid"]},
        affine, window=(-1000.0, 1000.0), reference="truth", error_window=300.0,
    )  # fmt: skip
    summary = {
        "views": config.views,
        "geometry": geo.to_dict(),
        "grid_shape": list(shape),
        "grid_spacing_mm": config.spacing_mm,
        "metrics": {name: {**r.metrics, "seconds": r.seconds, "iterations": r.iterations} for name, r in results.items()},
        "config": config_to_dict(config),
        "outputs": {**{k: str(v) for k, v in paths.items()}, "figure": str(figure)},
    }
    write_json(out / "metrics.json", summary)
    save_projections(out / "projections", projections.as_tensor(), geo, {"mu_water_per_mm": MU_WATER_PER_MM,
                     "volume_affine": ct.affine.tolist(), "volume_shape": list(ct.shape)})  # fmt: skip
    return summary
