"""Generative jobs: train a prior on X-ray views (``monai-gnerf train-prior``, ``bundle/configs/train.json``)
and reconstruct from one X-ray with it (``monai-gnerf single-view``, ``bundle/configs/inference.json``)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer
from monai.utils import CommonKeys
from PIL import Image
from torch.utils.data import Dataset

from monai_gnerf.apps.common import Units, check_device, to_units
from monai_gnerf.apps.figures import fit_figure, single_view_figure
from monai_gnerf.config import Config, NonNegativeInt, PositiveFloat, PositiveInt, Range, config_to_dict
from monai_gnerf.data import (
    SCENE_HALF_SIZE_MM,
    CTPopulation,
    CTViewDataset,
    MedNeRFFolderDataset,
    PhantomPopulation,
    PhantomViewDataset,
    ct_cases,
    example_ct_path,
    example_prior_path,
)
from monai_gnerf.data.phantoms import centered_grid
from monai_gnerf.engines import (
    LatentPrior,
    PriorConfig,
    PriorResult,
    SingleViewConfig,
    SingleViewFit,
    copy_input_views,
    fit_single_view,
    map_residual_mse,
    train_prior,
)
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry, volume_center_mm
from monai_gnerf.io import (
    atomic_output_dir,
    check_output,
    dicom_identifiers_of_file,
    write_json,
    projection_folder_bytes,
    load_ct,
    save_dicom_series,
    save_projections,
    save_volume,
    silhouette_width_fraction,
)
from monai_gnerf.metrics import normalize_to_reference, psnr
from monai_gnerf.resources import check_memory
from monai_gnerf.networks import GeneratorHeader, RadianceFieldGenerator, load_generator, save_generator
from monai_gnerf.physics import MU_WATER_PER_MM, attenuation_to_hu, hu_to_attenuation
from monai_gnerf.render import render_drr, sample_volume_at
from monai_gnerf.transforms import ModelViewOfXRay, ct_view_preprocessing

__all__ = [
    "SingleViewJobConfig",
    "TrainPriorJobConfig",
    "prior_dataset",
    "prior_geometry",
    "export_prior",
    "example_single_view",
    "model_view_of_xray",
    "xray_intake",
    "SingleViewResult",
    "SingleViewInferer",
    "SingleViewWriter",
    "single_view_reconstruction",
    "train_prior_workflow",
]

SINGLE_VIEW_OUTPUTS = ("views", "views.gif", "volume.nii.gz", "volume.nrrd", "volume_dicom", "fit.json", "fit.png")
"""What :func:`single_view_reconstruction` writes into its folder."""
_VOLUME_BYTES_PER_VOXEL = 64  # the generator's sample points (3 float32), the volume, its copies in HU

_LOGGER = logging.getLogger(__name__)


@dataclass
class TrainPriorJobConfig(Config):
    """Options of :func:`train_prior_workflow`.

    Args:
        data: 'phantoms' or 'phantoms:knee' (procedural population, exact DRRs), 'varied:<CTs>'
            (random variations of CTs; 'varied:example' for the embedded one), a MedNeRF-format
            folder (one sub-folder of PNG views per subject) or a CT file/folder (DRRs on the fly).
        geometry: preset name or geometry JSON file of the training views.
        detector_size: training detector pixels per side (same physical detector).
        subjects: number of phantom subjects.
        calibration_subjects: validation subjects of a procedural population ('phantoms',
            'varied:') on whose first-angle views the finished prior's MAP residual is measured
            (the single-view fit's discrepancy target); 0, or fixed data, measures none.
        prior: the adversarial training options (generator sizes included).
    """

    data: str = "phantoms"
    geometry: str | ProjectionGeometry = "mednerf_chest"
    detector_size: Annotated[int, Range(ge=8)] = 64
    subjects: PositiveInt = 32
    calibration_subjects: NonNegativeInt = 8
    prior: PriorConfig = field(default_factory=PriorConfig)


def prior_dataset(
    data: str | Path,
    geometry: ProjectionGeometry,
    subjects: int = 32,
    seed: int = 0,
    transform: Any = None,
    extent_mm: float = SCENE_HALF_SIZE_MM,
) -> Dataset:
    """The training views named by ``data``.

    Args:
        data: ``"phantoms"`` / ``"phantoms:chest"`` / ``"phantoms:knee"`` (the procedural
            population), ``"varied:<CT file or folder>"`` (random elastic, affine and intensity
            variations of those CTs; ``varied:example`` for the embedded CT), a MedNeRF-format
            folder (sub-folders of PNG views), or a CT file/folder (its DRRs as they are).
        geometry: acquisition for phantoms and CTs (MedNeRF folders bring their own angles).
        subjects: number of subjects drawn from a population (indices ``0 .. subjects-1``).
        seed: population seed.
        transform: the preprocessing of each CT of CT data (default
            :func:`~monai_gnerf.transforms.ct_view_preprocessing` of ``geometry``); populations and
            MedNeRF folders bring their own views.
        extent_mm: half-size of the cube varied CTs are resampled onto, mm: the generator's
            scene (``GeneratorConfig.extent_mm``), so no anatomy the generator must render is cut.
    """
    text = str(data)
    if text.startswith("phantoms"):
        kind = text.split(":", 1)[1] if ":" in text else "chest"
        if kind not in ("chest", "knee"):
            raise GnerfInputError(f"unknown phantom population {kind!r}; use phantoms:chest or phantoms:knee.")
        return PhantomViewDataset(PhantomPopulation(kind, seed), geometry, range(subjects))  # type: ignore[arg-type]
    if text.startswith("varied:"):
        cts = tuple(str(path) for _, path in ct_cases(text.split(":", 1)[1]))
        return PhantomViewDataset(CTPopulation(cts, seed, extent_mm=extent_mm), geometry, range(subjects))
    path = Path(text)
    if not path.exists():
        raise GnerfInputError(f"training data not found: {path} (use 'phantoms', 'varied:<CTs>', a MedNeRF folder or CTs).")
    if path.is_dir() and any(d.is_dir() and any(d.glob("*.png")) for d in path.iterdir()):
        return MedNeRFFolderDataset(path)
    return CTViewDataset(path, geometry, transform or ct_view_preprocessing(geometry))


def _view_statistics(dataset: Dataset, samples: int = 16) -> dict[str, float]:
    """What single-view intake needs to know of the training views, over a sample of them.

    ``reference_max``: the typical bright line integral (99.5th percentile over all angles);
    ``silhouette_width_fraction``: the body's width in the first-angle (PA) views as a fraction of
    the detector, which sets the scale of radiographs that carry no pixel spacing.
    """
    step = max(1, len(dataset) // samples)
    values = torch.cat([dataset[i]["image"].flatten() for i in range(0, len(dataset), step)])
    num_views = len(dataset.angles_deg)
    first_views = torch.stack([dataset[i]["image"] for i in range(0, len(dataset), num_views)][:samples])
    return {
        "reference_max": float(torch.quantile(values[:: max(1, values.numel() // 200_000)], 0.995)),
        "silhouette_width_fraction": silhouette_width_fraction(first_views),
    }


def prior_geometry(config: TrainPriorJobConfig) -> ProjectionGeometry:
    """The training acquisition: the job's geometry, its detector resampled to ``detector_size``
    pixels per side over the same physical size (CPU-sized training)."""
    return load_geometry(config.geometry).with_detector_shape(config.detector_size, config.detector_size)


def export_prior(out: str | Path, result: PriorResult, dataset: Dataset, config: TrainPriorJobConfig) -> Path:
    """Write ``OUT/generator.pt``: the trained generator, its geometry and what single view needs.

    The file's ``extra`` holds the data's name and size, the view statistics (typical line
    integral, body width), the run's iterations and seconds, the job's options, the learned
    latent distribution and, for a procedural population, the MAP residual on validation subjects
    (:func:`~monai_gnerf.engines.map_residual_mse`, the single-view fit's discrepancy target).
    In a distributed run only rank 0 writes.

    Returns:
        The generator file.
    """
    path = Path(out) / "generator.pt"
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return path
    extra = {"data": str(config.data), "subjects": config.subjects, **_view_statistics(dataset),
             "iterations": result.iterations, "seconds": result.seconds, "config": config_to_dict(config)}  # fmt: skip
    if result.latent_mean is not None:
        extra.update(latent_mean=result.latent_mean.cpu(), latent_covariance=result.latent_covariance.cpu())
        if isinstance(dataset, PhantomViewDataset) and config.calibration_subjects:
            views = dataset.validation_views(config.calibration_subjects)
            prior = LatentPrior(result.latent_mean.cpu(), result.latent_covariance.cpu())
            generator = copy.deepcopy(result.generator).cpu()
            extra.update(map_residual_mse=map_residual_mse(generator, result.geometry, views, prior),
                         map_residual_subjects=config.calibration_subjects)  # fmt: skip
    return save_generator(path, result.generator, result.geometry, extra)


def train_prior_workflow(
    out: str | Path = "outputs/prior",
    config: TrainPriorJobConfig | None = None,
    device: str | torch.device = "cpu",
    tensorboard_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a generative radiance-field prior (GRAF/MedNeRF) on X-ray views.

    Writes OUT/generator.pt (the EMA generator, its geometry and metadata), OUT/checkpoints/
    (resumable: the same command continues the run) and OUT/checkpoints/samples.png. The
    geometry's detector is resampled to DETECTOR_SIZE pixels per side over the same physical
    size (CPU-sized training).

    Args:
        out: output folder.
        config: training options.
        device: 'cpu', 'cuda' or 'cuda:N'.
        tensorboard_dir: write TensorBoard logs (losses, sample renders) here.
        overwrite: discard an earlier run in OUT made on other data or another generator
            (without it that run is refused; a run on the same inputs always resumes).

    Returns:
        The generator file.
    """
    config = config or TrainPriorJobConfig()
    device = check_device(device)
    out = check_output(out, "dir", overwrite=True)
    if tensorboard_dir is not None:
        check_output(tensorboard_dir, "dir", overwrite=True, option="--tensorboard_dir")
    geo = prior_geometry(config)
    dataset = prior_dataset(config.data, geo, config.subjects, extent_mm=config.prior.generator.extent_mm)
    result = train_prior(dataset, geo, config.prior, out / "checkpoints", tensorboard_dir, device, restart=overwrite)
    return export_prior(out, result, dataset, config)


@dataclass
class SingleViewJobConfig(Config):
    """Options of :func:`single_view_reconstruction`.

    Args:
        views: number of output views over 360 degrees.
        volume_size: output volume voxels per side.
        units: 'hu' or 'mu' (1/mm).
        pixel_spacing_mm: the X-ray's detector pixel size, mm, when its file has none (or a
            wrong one); unset: the file's, else estimated from the body silhouette (a warning).
        centre_silhouette: centre the body silhouette on the model's detector.
        nrrd: also write the volume as ``volume.nrrd`` (3D Slicer's default format).
        dicom: also write the volume (HU) as a DICOM CT series, ``volume_dicom/``; from a DICOM
            radiograph it joins that patient's study.
        fit: the inversion and fine-tuning options.
    """

    views: PositiveInt = 72
    volume_size: Annotated[int, Range(ge=2)] = 64
    units: Units = "hu"
    pixel_spacing_mm: PositiveFloat | None = None
    centre_silhouette: bool = True
    nrrd: bool = False
    dicom: bool = False
    fit: SingleViewConfig = field(default_factory=SingleViewConfig)


def _write_gif(path: Path, views_display: torch.Tensor, duration_ms: int = 80) -> None:
    frames = (views_display.clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu().numpy()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def model_view_of_xray(xray: str | Path, header: GeneratorHeader, config: SingleViewJobConfig) -> torch.Tensor:
    """The X-ray intake shared by the CLI, the bundle and Slicer: file -> line integrals on the model detector.

    Args:
        xray: the radiograph file (DICOM, NRRD/NIfTI/MHA, PNG/JPEG/TIFF).
        header: the generator file's header (geometry, ``reference_max``, ``silhouette_width_fraction``).
        config: the job's options (``pixel_spacing_mm``, ``centre_silhouette``).
    """
    return xray_intake(header, config)(xray)


def xray_intake(header: GeneratorHeader, config: SingleViewJobConfig) -> ModelViewOfXRay:
    """The :class:`~monai_gnerf.transforms.ModelViewOfXRay` of a model with the job's options."""
    return ModelViewOfXRay(header.geometry, header.reference_max, header.extra.get("silhouette_width_fraction"),
                           config.pixel_spacing_mm, config.centre_silhouette)  # fmt: skip


@dataclass
class SingleViewResult:
    """What :class:`SingleViewInferer` returns for one X-ray.

    Attributes:
        views: ``(views, rows, cols)`` line integrals over the full orbit, from the fitted angle.
        views_geometry: their acquisition (the model's, with the orbit's angles).
        volume: ``(s, s, s)`` attenuation (1/mm) over the generator's scene cube.
        affine: the volume's affine (isocenter at the world origin).
        fit: the inversion's result (codes, angle, loss history, task weights).
        input_view: the view fitted, ``(rows, cols)`` line integrals on the model's detector.
    """

    views: torch.Tensor
    views_geometry: ProjectionGeometry
    volume: torch.Tensor
    affine: torch.Tensor
    fit: SingleViewFit
    input_view: torch.Tensor


class SingleViewInferer(Inferer):
    """MONAI inferer of single-view reconstruction: fit the network (a generator) to one model view.

    ``inferer(view, network)`` runs :func:`~monai_gnerf.engines.fit_single_view` (latent search from
    the prior, then fine-tuning of a copy; gradients on even inside an evaluator's ``no_grad``)
    and renders the fitted model: ``config.views`` views over 360 degrees and a
    ``config.volume_size^3`` volume.

    Args:
        geometry: the model's acquisition.
        config: the job's options (``fit``, ``views``, ``volume_size``).
        latent_prior: the codes' prior (:meth:`LatentPrior.of_generator`); default standard normal.
        progress: show progress bars.
    """

    def __init__(
        self, geometry: ProjectionGeometry, config: SingleViewJobConfig, latent_prior: LatentPrior | None = None,
        progress: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.geometry, self.config, self.latent_prior, self.progress = geometry, config, latent_prior, progress

    def __call__(self, inputs: torch.Tensor, network: RadianceFieldGenerator) -> SingleViewResult:
        """Fit ``network`` to ``inputs``, one view ``(rows, cols)`` or a batch of one ``(1, rows, cols)``."""
        view = inputs[0] if inputs.ndim == 3 else inputs
        device = next(network.parameters()).device
        with torch.enable_grad():
            fit = fit_single_view(network, self.geometry, view.to(device), self.config.fit, device, self.progress,
                                  self.latent_prior)  # fmt: skip
        views_geometry = self.geometry.with_uniform_angles(self.config.views, start_deg=fit.angle_deg)
        with torch.no_grad():
            views = fit.generator.render_views(fit.z_shape, fit.z_appearance, views_geometry)
            volume, affine = fit.generator.volume(fit.z_shape, fit.z_appearance, (self.config.volume_size,) * 3)
        return SingleViewResult(views * network.config.value_scale, views_geometry, volume, affine, fit, view)


class SingleViewWriter:
    """Writes a :class:`SingleViewResult` into a folder: ``views/``, ``views.gif``, ``volume.nii.gz``
    (with ``config.nrrd`` also ``volume.nrrd``, with ``config.dicom`` a CT series ``volume_dicom/``),
    ``fit.json`` and ``fit.png`` (input, fitted view and their difference, above the loss history).

    Made before the work: it checks the memory of the volume and the destination (a writable
    folder, room on disk, an earlier result replaced only with ``overwrite``). Attached to an
    evaluator it writes each iteration's prediction (the batch's ``"xray"`` names the input).

    Args:
        output_dir: the output folder (written atomically).
        config: the job's options (``views``, ``volume_size``, ``units``).
        header: the generator file's header.
        checkpoint: the generator file (recorded in ``fit.json`` and the views).
        overwrite: replace the outputs of an earlier run.
        xray: the radiograph, when known before the work (no output may replace it, nor the checkpoint).

    Raises:
        GnerfInputError: not enough memory, an unusable destination (one that would replace an
            input included), an existing result.
    """

    def __init__(
        self, output_dir: str | Path, config: SingleViewJobConfig, header: GeneratorHeader, checkpoint: str | Path,
        overwrite: bool = False, xray: str | Path | None = None,
    ) -> None:  # fmt: skip
        voxels = config.volume_size**3
        output_bytes = projection_folder_bytes(config.views, header.geometry.detector_shape) + 4 * voxels
        check_memory(_VOLUME_BYTES_PER_VOXEL * voxels, f"a {config.volume_size}^3 volume")
        inputs = [checkpoint] if xray is None else [checkpoint, xray]
        self.output_dir = check_output(output_dir, "dir", overwrite, SINGLE_VIEW_OUTPUTS, output_bytes, inputs=inputs)
        self.config, self.header, self.checkpoint = config, header, checkpoint

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_prediction)

    def _write_prediction(self, engine: Engine) -> None:
        self.write(engine.state.output[CommonKeys.PRED], engine.state.batch["xray"][0])

    def write(self, result: SingleViewResult, xray: str | Path) -> dict[str, Any]:
        """Write the outputs; returns the ``fit.json`` summary."""
        fit, config = result.fit, self.config
        summary = {
            "xray": str(xray),
            "checkpoint": str(self.checkpoint),
            "angle_deg": fit.angle_deg,
            "task_weights": {"mse": fit.task_weights[0], "structural": fit.task_weights[1]},
            "final_loss": fit.history[-1] if fit.history else None,
            "input_mse": fit.input_mse,
            "discrepancy_target_mse": fit.target_mse,
            "config": config_to_dict(config),
        }
        views = result.views.cpu()
        with atomic_output_dir(self.output_dir) as staging:
            save_projections(staging / "views", views, result.views_geometry,
                             {"source": str(xray), "model": str(self.checkpoint)})  # fmt: skip
            _write_gif(staging / "views.gif", views / self.header.config.value_scale)
            volume = to_units(result.volume.cpu(), config.units, MU_WATER_PER_MM)
            save_volume(staging / "volume.nii.gz", volume, result.affine)
            if config.nrrd:
                save_volume(staging / "volume.nrrd", volume, result.affine)
            if config.dicom:
                hu = to_units(result.volume.cpu(), "hu", MU_WATER_PER_MM)
                save_dicom_series(staging / "volume_dicom", hu, result.affine, dicom_identifiers_of_file(xray),
                                  "monai-gnerf single view")  # fmt: skip
            write_json(staging / "fit.json", summary)
            fit_figure(staging / "fit.png", result.input_view.cpu(), views[0], fit.history)
        _LOGGER.info(f"wrote {self.output_dir}: {config.views} views, volume {config.volume_size}^3 ({config.units})")
        return summary


def single_view_reconstruction(
    xray: str | Path,
    checkpoint: str | Path | None = None,
    out: str | Path = "outputs/single_view",
    config: SingleViewJobConfig | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Reconstruct from ONE X-ray with a trained prior: 72 views (PNG, NIfTI, GIF) and a volume.

    Outputs (written atomically into OUT): views/ (a projection folder: NIfTI stack of VIEWS
    line-integral views over 360 degrees, 16-bit PNGs, geometry), views.gif, volume.nii.gz
    (VOLUME_SIZE^3 over the generator's scene cube, isocenter at the world origin, in HU or 1/mm)
    fit.json and fit.png (input, fit, difference, loss history). The same components as ``bundle/configs/inference.json``: the intake
    (:class:`~monai_gnerf.transforms.ModelViewOfXRay`), :class:`SingleViewInferer` and
    :class:`SingleViewWriter`.

    Args:
        xray: the radiograph: DICOM DX/CR (pixel spacing, distances, modality, VOI and
            Presentation LUTs, MONOCHROME1 honoured), NRRD/NIfTI/MHA (2D or one slice) or PNG/JPEG/TIFF
            (a colour image is read as its gray level).
        checkpoint: generator file from `monai-gnerf train-prior` (OUT/generator.pt); default the
            shipped chest prior (bundle/models/model.pt).
        out: output folder (views/, views.gif, volume.nii.gz, fit.json, fit.png).
        config: single-view options.
        device: 'cpu', 'cuda' or 'cuda:N'.
        overwrite: replace the outputs of an earlier run in OUT.
    """
    config = config or SingleViewJobConfig()
    device = check_device(device)
    checkpoint = example_prior_path() if checkpoint is None else checkpoint
    generator, geometry, extra = load_generator(checkpoint, device)
    header = GeneratorHeader(generator.config, geometry, extra)
    writer = SingleViewWriter(out, config, header, checkpoint, overwrite, xray)
    target = model_view_of_xray(xray, header, config)
    inferer = SingleViewInferer(geometry, config, LatentPrior.of_generator(generator, extra))
    return writer.write(inferer(target.to(device), generator), xray)


def example_single_view(
    out: str | Path, budget_s: float = 40.0, device: str | torch.device = "cpu", volume_size: int = 64
) -> dict[str, Any]:
    """The generative half of the demo: the example CT's PA DRR in, 72 views and a volume out.

    The shipped prior (trained on procedural phantoms, never on the example CT) is fitted to one
    DRR of the example CT in the prior's geometry for ``budget_s`` seconds. Writes OUT/views/
    (72 views), OUT/volume.nii.gz (HU, overlaying the CT) and OUT/figure.png (input, four angles
    and three slices, fitted above true), and returns the 2D PSNR of the 71 unseen views against
    the trivial copy-the-input baseline and the volume's 3D PSNR (data ranges as the benchmark's).
    """
    device = check_device(device)
    out = Path(out)
    generator, geometry, extra = load_generator(example_prior_path(), device)
    ct = load_ct(example_ct_path())
    mu = hu_to_attenuation(ct.as_tensor().float())
    centre = volume_center_mm(ct.affine, ct.shape)
    orbit = geometry.with_uniform_angles(72)
    true_views = render_drr(mu.to(device), replace(orbit, isocenter_mm=tuple(centre.tolist())), ct.affine).cpu()
    job = SingleViewJobConfig(views=72, volume_size=volume_size, fit=SingleViewConfig(budget_s=budget_s))
    result = SingleViewInferer(geometry, job, LatentPrior.of_generator(generator, extra))(true_views[0].to(device), generator)
    views, volume, affine = result.views.cpu(), result.volume, result.affine
    points, _ = centered_grid((volume_size,) * 3, (2.0 * generator.config.extent_mm / volume_size,) * 3)
    volume, true_volume = volume.cpu(), sample_volume_at(mu, ct.affine, points + centre).float()
    data_range = float(true_views.max())
    estimate, reference = normalize_to_reference(volume, true_volume)
    summary = {
        "psnr_2d_unseen_views": psnr(views[1:], true_views[1:], data_range),
        "psnr_2d_copy_input_baseline": psnr(copy_input_views(true_views[0], 72)[1:], true_views[1:], data_range),
        "psnr_3d": psnr(estimate, reference, 1.0),
        "seconds": budget_s,
        "checkpoint": str(example_prior_path()),
    }
    world = affine.clone()
    world[:3, 3] += centre  # the volume overlays the CT
    out.mkdir(parents=True, exist_ok=True)
    save_projections(out / "views", views, result.views_geometry, {"source": "example CT, PA DRR", "model": str(example_prior_path())})
    save_volume(out / "volume.nii.gz", attenuation_to_hu(volume), world)
    summary["figure"] = str(single_view_figure(
        out / "figure.png", [("example CT, one PA DRR -> shipped prior", true_views, views, true_volume, volume)], affine
    ))  # fmt: skip
    write_json(out / "metrics.json", summary)
    return summary
