"""Adversarial training of a generative radiance-field prior on X-ray views (GRAF / MedNeRF).

Each iteration draws real views from a dataset (:mod:`monai_gnerf.data.datasets`), samples GRAF
patches (:class:`~monai_gnerf.render.PatchRaySampler`, scale annealed), renders the same number
of generated patches from random latent codes at random view angles of the dataset's orbit, and
takes one discriminator and one generator step:

* discriminator: non-saturating logistic loss ``softplus(-D(real)) + softplus(D(fake))`` plus
  the R1 penalty ``r1_weight / 2 * ||grad_x D(real)||^2`` (Mescheder et al., as GRAF);
* generator: ``softplus(-D(fake))``; an exponential moving average (EMA) of its weights is kept
  and is what :func:`~monai_gnerf.networks.save_generator` exports.

Reconstruction terms (on by default; ``view_weight = volume_weight = 0`` and a ``"graf"``
generator give MedNeRF's purely adversarial training) give every training subject its own learned code (an auto-decoder, as DeepSDF and GLO train), decoded
by the same generator:

* ``view_weight``: MSE between the subject's real patch and the same rays rendered from its code;
* ``volume_weight``: the 3D term, where the dataset knows its volumes (``attenuation_at``: phantoms
  and CTs): MSE of attenuation (in units of water) at random points of the scene cube;
* ``code_weight``: ``|z|^2 / dim``, keeping subject codes on the scale of the random codes.

With ``pca_init`` (``"grid"`` generators, datasets with volumes) the generator starts as the PCA
model of the training volumes (its base and linear path, :meth:`LatentGridField.initialize_from_pca`)
and the subject codes as their whitened PCA coefficients; training then adds what is non-linear.
The training volumes are computed once on the generator's grid (``volume_grid_size`` for
``"graf"``) and the 3D term samples them trilinearly.

The subject codes' mean and covariance are then the *learned latent distribution*
(:attr:`PriorResult.latent_mean`, :attr:`PriorResult.latent_covariance`) that single-view
inversion is regularized by.

Components (each built by :func:`train_prior` and, from the same config dataclasses, by the
MONAI bundle's ``train.json``):

* :class:`PriorStart`: the subject codes, the cached training volumes and the PCA start;
* :func:`prepare_training_views` (the views made before the budget starts), :func:`prior_data_loader`,
  :func:`generator_optimizer`, :func:`discriminator_optimizer`;
* :class:`PriorTrainer`: a ``monai.engines.Trainer`` whose iteration is the step above (the
  discriminator through the workflow's inferer), with Ignite's ``EMAHandler`` for the EMA;
* handlers: :func:`prior_run_state` (the run's identity), :class:`PriorSamples` (sample renders
  as PNG and to TensorBoard), and the shared ones of :mod:`monai_gnerf.engines.handlers`
  (budget, checkpoints, resume, Ctrl-C, progress) with MONAI's ``StatsHandler``,
  ``TensorBoardStatsHandler`` and Ignite's ``TerminateOnNan`` (:class:`StopOnNan`).

In a ``torch.distributed`` run (``torchrun``; gloo on CPU, nccl on GPUs) every rank draws its own
share of the data (``DistributedSampler``), gradients are averaged over ranks before each step
(one flattened all-reduce), and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from monai.engines import SupervisedEvaluator, Trainer
from monai.handlers import (
    IgniteMetricHandler,
    PeakSignalToNoiseRatio,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.inferers import Inferer, SimpleInferer
from monai.metrics import SSIMMetric
from monai.utils import CommonKeys
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from monai_gnerf.config import Config, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, config_to_dict
from monai_gnerf.engines.handlers import RunState, StopOnNan, every_and_at_end, step_stats, training_handlers
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io import atomic_output_file, fingerprint
from monai_gnerf.data.phantoms import centered_grid
from monai_gnerf.networks import GeneratorConfig, PatchDiscriminator, PCAVolumeModel, RadianceFieldGenerator
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.progress import progress_bar
from monai_gnerf.render import PatchRaySampler, sample_image_patches, sample_volume_at

__all__ = [
    "PriorConfig",
    "PriorResult",
    "SubjectCodes",
    "PriorStart",
    "PriorTrainer",
    "PriorSamples",
    "prepare_training_views",
    "prior_data_loader",
    "generator_optimizer",
    "discriminator_optimizer",
    "prior_run_state",
    "prior_validation_set",
    "SubjectViewBatch",
    "SubjectViewInferer",
    "prior_evaluator",
    "orbit_geometry",
    "train_prior",
]

CHECKPOINT_PREFIX = "prior"
_LOGGER = "monai_gnerf.engines.prior"
T = TypeVar("T")


@dataclass
class PriorConfig(Config):
    """Options of :func:`train_prior` (all JSON-ready).

    Args:
        generator: generator sizes and rendering model.
        patch_size: rays per patch side.
        batch_size: patches per step (per rank).
        min_scale: smallest patch scale after annealing.
        anneal_iterations: iterations over which the patch scale anneals.
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the discriminator.
        r1_weight: weight of the R1 gradient penalty on real patches. GRAF uses 10 without
            spectral normalization; with it (our discriminator) 10 stalls the discriminator
            within ~500 iterations (logits equal for real and fake), 0.1 keeps it learning.
        ema_decay: EMA decay of the generator weights (``None``: no EMA).
        discriminator_channels: widths of the discriminator's strided layers.
        discriminator_scales: resolutions the discriminator sees.
        max_iterations: iteration budget.
        budget_s: wall-time budget in seconds (across resumes), or ``None``.
        log_every: iterations between log lines.
        checkpoint_every: iterations between checkpoints.
        sample_every: iterations between sample renders (PNG in the work folder).
        validate_every: iterations between validations (``None``: none): the first
            ``validation_subjects`` training subjects rendered from their learned codes at the
            orbit's first angle and a quarter turn, against their real views: PSNR and SSIM
            (data range: ``generator.value_scale``) in the log and TensorBoard.
        validation_subjects: subjects of each validation.
        view_weight: weight of the per-subject view reconstruction term (0: off).
        volume_weight: weight of the per-subject 3D attenuation term (0: off; needs a dataset
            with volumes).
        code_weight: weight of the subject codes' ``|z|^2 / dim`` penalty.
        volume_points: random points per subject and step of the 3D term.
        volume_grid_size: voxels per side of the cached training volumes of a ``"graf"``
            generator (a ``"grid"`` generator uses its own grid).
        pca_init: start a ``"grid"`` generator and the subject codes from the PCA of the
            training volumes (needs a dataset with volumes; ``"graf"`` generators ignore it).
        seed: random seed.
    """

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    patch_size: Annotated[int, Range(ge=4)] = 16
    batch_size: PositiveInt = 8
    min_scale: Fraction = 0.25
    anneal_iterations: NonNegativeInt = 2000
    lr_generator: PositiveFloat = 5e-4
    lr_discriminator: PositiveFloat = 2e-4
    r1_weight: float = 0.1
    ema_decay: Annotated[float, Range(ge=0, lt=1)] | None = 0.99
    discriminator_channels: tuple[PositiveInt, ...] = (32, 64, 128)
    discriminator_scales: PositiveInt = 2
    max_iterations: PositiveInt = 2000
    budget_s: PositiveFloat | None = None
    log_every: PositiveInt = 25
    checkpoint_every: PositiveInt = 200
    sample_every: PositiveInt = 200
    validate_every: PositiveInt | None = 200
    validation_subjects: PositiveInt = 4
    view_weight: NonNegativeFloat = 1.0
    volume_weight: NonNegativeFloat = 1.0
    code_weight: NonNegativeFloat = 1e-2
    volume_points: PositiveInt = 4096
    volume_grid_size: Annotated[int, Range(ge=2)] = 32
    pca_init: bool = True
    seed: int = 0

    @property
    def learns_subject_codes(self) -> bool:
        """Whether the reconstruction terms (and so per-subject codes) are on."""
        return self.view_weight > 0 or self.volume_weight > 0

    @property
    def validates(self) -> bool:
        """Whether training validates (it needs learned subject codes and a ``validate_every``)."""
        return self.learns_subject_codes and self.validate_every is not None

    @property
    def needs_volumes(self) -> bool:
        """Whether training reads the dataset's volumes (the 3D term or the PCA start)."""
        return self.volume_weight > 0 or self.starts_from_pca

    @property
    def starts_from_pca(self) -> bool:
        """Whether the generator starts as the PCA model (``pca_init`` on a ``"grid"`` generator)."""
        return self.pca_init and self.generator.architecture == "grid"


@dataclass
class PriorResult:
    """A trained prior: the (EMA) generator, its geometry, and the run's statistics.

    Attributes:
        latent_mean: mean of the learned subject codes ``(shape_dim + appearance_dim,)``, or
            ``None`` when the run learned none (the prior is then the standard normal).
        latent_covariance: their covariance, or ``None``.
        validation: the last validation's metrics (``val_psnr``, ``val_ssim``), or ``{}``.
    """

    generator: RadianceFieldGenerator
    geometry: ProjectionGeometry
    iterations: int
    seconds: float
    losses: dict[str, float]
    latent_mean: torch.Tensor | None = None
    latent_covariance: torch.Tensor | None = None
    validation: dict[str, float] = field(default_factory=dict)


class SubjectCodes(nn.Module):
    """One learned latent code per training subject (auto-decoder), split into shape and appearance.

    Args:
        num_subjects: subjects of the dataset.
        shape_dim: shape code size.
        appearance_dim: appearance code size.
        seed: seed of the initial codes (small standard-normal draws).
    """

    def __init__(self, num_subjects: int, shape_dim: int, appearance_dim: int, seed: int = 0) -> None:
        super().__init__()
        self.shape_dim = shape_dim
        start = 0.1 * torch.randn(num_subjects, shape_dim + appearance_dim, generator=torch.Generator().manual_seed(seed))
        self.codes = nn.Parameter(start)

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape and appearance codes of subjects ``index`` ``(B,)``."""
        z = self.codes[index]
        return z[:, : self.shape_dim], z[:, self.shape_dim :]

    def distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance (``+1e-4 I``, so it is invertible) of the codes."""
        z = self.codes.detach().double()
        centred = z - z.mean(0)
        covariance = centred.T @ centred / max(1, z.shape[0] - 1) + 1e-4 * torch.eye(z.shape[1], dtype=z.dtype)
        return z.mean(0).float(), covariance.float()


def _average_gradients(modules: list[nn.Module]) -> None:
    """Average the gradients of ``modules`` over the ranks: one flattened all-reduce (as DDP's buckets)."""
    world_size = idist.get_world_size()
    if world_size == 1:
        return
    grads = [p.grad for module in modules for p in module.parameters() if p.grad is not None]
    flat = idist.all_reduce(torch.cat([g.flatten() for g in grads])) / world_size
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _broadcast_parameters(modules: list[nn.Module]) -> None:
    """Start every rank from rank 0's weights."""
    if idist.get_world_size() == 1:
        return
    for module in modules:
        for tensor in module.state_dict().values():
            tensor.copy_(idist.broadcast(tensor, src=0))


def orbit_geometry(geometry: str | ProjectionGeometry) -> ProjectionGeometry:
    """The training geometry in the generator's frame: the isocenter is the origin."""
    return replace(load_geometry(geometry), isocenter_mm=(0.0, 0.0, 0.0))


def _sample_grid(generator: RadianceFieldGenerator, geometry: ProjectionGeometry, latents, path: Path) -> np.ndarray:
    """Render fixed latents at four angles into one 8-bit PNG grid (rows: latents)."""
    angles = torch.tensor([0.0, 45.0, 90.0, 180.0])
    with torch.no_grad():
        rows = [generator.render_views(z_s[None], z_a[None], geometry, angles) for z_s, z_a in zip(*latents)]
    grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0).clamp(0.0, 1.0).cpu().numpy()
    with atomic_output_file(path) as tmp:
        Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(tmp, format="PNG")
    return grid


def _for_each_subject(dataset: Dataset, what: str, progress: bool, job: Callable[[int], T]) -> list[T]:
    """``job(i)`` for every subject of the dataset: the first before a progress bar named ``what``
    is drawn (so a broken first input is one error line), the others behind it."""
    results = [job(0)]
    with progress_bar(total=dataset.num_subjects, initial=1, desc=what, unit="subject", disable=not progress) as bar:
        for i in range(1, dataset.num_subjects):
            results.append(job(i))
            bar.update()
    return results


def prepare_training_views(dataset: Dataset, progress: bool = False) -> None:
    """Make every subject's views before training (datasets with ``prepare_subject``), so a
    training budget is spent training rather than on the views the first batches reach."""
    if hasattr(dataset, "prepare_subject"):
        _for_each_subject(dataset, "training views", progress, dataset.prepare_subject)


def _training_volumes(dataset: Dataset, size: int, extent_mm: float, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training subject's attenuation (1/mm) at the voxel centres of a ``size^3`` grid over
    the scene cube, ``(N, size, size, size)`` indexed ``[x, y, z]``, and the grid's affine."""
    points, affine = centered_grid((size,) * 3, (2.0 * extent_mm / size,) * 3)
    points = points.float()
    volumes = _for_each_subject(dataset, "training volumes", progress, lambda i: dataset.attenuation_at(i, points))
    return torch.stack(volumes), affine


class PriorStart:
    """Where prior training starts: one code per training subject, the training volumes, the PCA start.

    With ``config.starts_from_pca`` the generator's field becomes the PCA model of the training
    volumes (its base and linear path, :meth:`LatentGridField.initialize_from_pca`) and the codes
    their whitened PCA coefficients; training then adds what is non-linear. Build it before the
    EMA copy of the generator (Ignite's ``EMAHandler`` copies the weights it is given).

    Args:
        generator: the generator to train (modified in place by the PCA start).
        dataset: the training views (``num_subjects``; ``attenuation_at`` where volumes are needed).
        config: the training options (``config.generator`` must be ``generator.config``).
        device: device of the codes and volumes.
        progress: show a progress bar while the training volumes are made.

    Attributes:
        generator: the generator.
        codes: the :class:`SubjectCodes`.
        volumes: training attenuation (1/mm) on the generator's grid ``(N, s, s, s)``, or ``None``.
        volume_affine: the volumes' affine, or ``None``.

    Raises:
        GnerfInputError: volumes needed but the dataset has none; a PCA start of fewer than 2
            subjects; a generator of other sizes.
    """

    def __init__(
        self, generator: RadianceFieldGenerator, dataset: Dataset, config: PriorConfig,
        device: torch.device | str = "cpu", progress: bool = False,
    ) -> None:  # fmt: skip
        if generator.config != config.generator:
            raise GnerfInputError("the generator's sizes differ from the prior config's generator options.")
        if config.needs_volumes and not hasattr(dataset, "attenuation_at"):
            raise GnerfInputError(
                "volume_weight and pca_init need training data with volumes (phantoms or CTs); "
                "for views alone set volume_weight 0 and pca_init False."
            )
        if config.starts_from_pca and dataset.num_subjects < 2:
            raise GnerfInputError(
                f"pca_init needs at least 2 training subjects, the data has {dataset.num_subjects}; "
                "add subjects (from one CT, its random variations: data 'varied:<CT>') or set pca_init False."
            )
        g = config.generator
        self.generator = generator
        self.codes = SubjectCodes(dataset.num_subjects, g.shape_dim, g.appearance_dim, config.seed).to(device)
        self.volumes = self.volume_affine = None
        if config.needs_volumes:
            size = g.grid_size if g.architecture == "grid" else config.volume_grid_size
            volumes, self.volume_affine = _training_volumes(dataset, size, g.extent_mm, progress)
            if config.starts_from_pca:
                self._initialize_from_pca(volumes, self.volume_affine)
            self.volumes = volumes.to(device)

    def _initialize_from_pca(self, volumes: torch.Tensor, affine: torch.Tensor) -> None:
        """The PCA start of the class docstring (densities in units of the generator's ``scale_per_mm``)."""
        scaled = volumes / self.generator.config.scale_per_mm
        pca = PCAVolumeModel.from_volumes(scaled, affine)
        stddevs = pca.variances.sqrt()
        self.generator.field.initialize_from_pca(pca.mean, pca.components, stddevs)
        used = min(pca.num_components, self.codes.shape_dim)
        with torch.no_grad():
            self.codes.codes.zero_()
            for i, volume in enumerate(scaled):
                self.codes.codes[i, :used] = pca.encode(volume)[:used].to(self.codes.codes) / stddevs[:used]


def prior_data_loader(dataset: Dataset, config: PriorConfig) -> DataLoader:
    """Shuffled batches of ``config.batch_size`` views; in a distributed run each rank draws its share.

    Raises:
        GnerfInputError: fewer views than one batch per rank.
    """
    world_size = idist.get_world_size()
    if len(dataset) < config.batch_size * world_size:
        raise GnerfInputError(
            f"the dataset has {len(dataset)} views, fewer than one batch ({config.batch_size}) per rank."
        )
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=idist.get_rank(), seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)


def generator_optimizer(generator: nn.Module, codes: SubjectCodes, config: PriorConfig) -> torch.optim.Optimizer:
    """Adam over the generator and (with the reconstruction terms) the subject codes at 10x its rate."""
    groups = [{"params": list(generator.parameters())}]
    if config.learns_subject_codes:
        groups.append({"params": list(codes.parameters()), "lr": 10.0 * config.lr_generator})
    return torch.optim.Adam(groups, lr=config.lr_generator, betas=(0.0, 0.99))


def discriminator_optimizer(discriminator: nn.Module, config: PriorConfig) -> torch.optim.Optimizer:
    """Adam over the discriminator (GRAF's betas)."""
    return torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=(0.0, 0.99))


def prior_run_state(config: PriorConfig, dataset: Dataset, geometry: ProjectionGeometry) -> RunState:
    """The run's identity: generator sizes, detector, patch size and a fingerprint of the data
    (its size, its first and last views and the geometry); checkpoints of other runs are refused."""
    inputs = fingerprint(len(dataset), dataset[0]["image"], dataset[len(dataset) - 1]["image"], geometry.to_dict())
    return RunState({"kind": "generative prior", "generator": config_to_dict(config.generator),
                     "detector_shape": list(geometry.detector_shape), "patch_size": config.patch_size,
                     "inputs": inputs})  # fmt: skip


class PriorTrainer(Trainer):
    """Adversarial prior training as a MONAI ``Trainer`` (an Ignite engine): one D and one G step per iteration.

    Args:
        device: the device of this rank.
        max_epochs: epochs of ``epoch_length`` iterations (the library runs one epoch of
            ``max_iterations``; the data loader restarts whenever it runs out).
        train_data_loader: batches of views (:func:`prior_data_loader`).
        start: the generator, subject codes and training volumes (:class:`PriorStart`).
        discriminator: the patch discriminator.
        optimizer_g: the generator's (and codes') optimizer (:func:`generator_optimizer`).
        optimizer_d: the discriminator's optimizer (:func:`discriminator_optimizer`).
        geometry: the training orbit in the generator's frame (:func:`orbit_geometry`).
        config: the training options.
        epoch_length: iterations per epoch (default: the loader's length).
        inferer: how the discriminator is called on patches, ``inferer(patches, discriminator, scale)``.
        ema: Ignite's ``EMAHandler`` of the generator (attached first; its ``ema_model`` is the
            trained prior), or ``None`` for the generator itself.
        train_handlers: handlers attached in order (checkpointing before ones that re-raise).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: DataLoader,
        start: PriorStart,
        discriminator: nn.Module,
        optimizer_g: torch.optim.Optimizer,
        optimizer_d: torch.optim.Optimizer,
        geometry: ProjectionGeometry,
        config: PriorConfig,
        epoch_length: int | None = None,
        inferer: Inferer | None = None,
        ema: EMAHandler | None = None,
        train_handlers: list | None = None,
    ) -> None:
        super().__init__(device=device, max_epochs=max_epochs, data_loader=train_data_loader,
                         epoch_length=epoch_length, decollate=False)  # fmt: skip
        self.generator, self.discriminator, self.start = start.generator, discriminator, start
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.geometry, self.config = geometry, config
        self.inferer = SimpleInferer() if inferer is None else inferer
        dataset = train_data_loader.dataset
        self.angles = torch.tensor(dataset.angles_deg, dtype=torch.float32)
        self.rng = torch.Generator().manual_seed(config.seed + 7919 * idist.get_rank())
        self.sampler = PatchRaySampler(geometry, config.patch_size, config.min_scale, 1.0, config.anneal_iterations)
        _broadcast_parameters([self.generator, discriminator, start.codes])
        sampler = getattr(train_data_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a new shuffle each time the loader restarts within an epoch
            self.add_event_handler(Events.DATALOADER_STOP_ITERATION, lambda e: sampler.set_epoch(e.state.iteration))
        self.ema = ema
        if ema is not None:
            ema.attach(self)
        if train_handlers:
            self._register_handlers(train_handlers)

    @property
    def prior(self) -> RadianceFieldGenerator:
        """The generator that training yields: the EMA copy, or the generator without EMA."""
        return self.generator if self.ema is None else self.ema.ema_model

    def result(self, seconds: float) -> PriorResult:
        """The trained prior, with the learned latent distribution when subject codes were learned."""
        losses = dict(step_stats(self.state.output))
        mean, covariance = self.start.codes.distribution() if self.config.learns_subject_codes else (None, None)
        return PriorResult(self.prior, self.geometry, self.state.iteration, seconds, losses, mean, covariance)

    def _reconstruction_terms(self, batch: dict[str, Any], patches, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-subject terms of the module docstring (empty when they are off)."""
        c, start = self.config, self.start
        if not c.learns_subject_codes:
            return {}
        index = batch["index"].to(self.state.device)
        z_s, z_a = start.codes(index)
        terms = {"code": (z_s.pow(2).mean() + z_a.pow(2).mean()) / 2.0}
        if c.view_weight > 0:
            o, d = self.geometry.rays_at(batch["angle_deg"].to(self.state.device), patches.rows, patches.cols)
            terms["view"] = F.mse_loss(self.generator(z_s, z_a, o, d, jitter=self.rng), real.detach().flatten(1))
        if c.volume_weight > 0:
            extent = c.generator.extent_mm
            points = (torch.rand(index.shape[0], c.volume_points, 3, generator=self.rng) * 2.0 - 1.0) * extent
            points = points.to(self.state.device)
            truth = torch.stack(
                [sample_volume_at(start.volumes[int(i)], start.volume_affine, p) for i, p in zip(index, points)]
            )
            terms["volume"] = F.mse_loss(self.generator.attenuation(points, z_s, z_a), truth) / MU_WATER_PER_MM**2
        return terms

    def _fake_patches(self, patches, batch: int) -> torch.Tensor:
        device = self.state.device
        angles = self.angles[torch.randint(len(self.angles), (batch,), generator=self.rng)].to(device)
        o, d = self.geometry.rays_at(angles, patches.rows, patches.cols)
        z_s, z_a = self.generator.sample_latents(batch, self.rng, device)
        return self.generator(z_s, z_a, o, d, jitter=self.rng)

    def _iteration(self, engine: Engine, batch: dict[str, Any]) -> list[dict[str, float]]:
        """One D and one G step; the output is MONAI's decollated form, one dict of floats in a list
        (``loss`` and its terms), which MONAI's default tracking settings (``--tracking mlflow``) read."""
        c, p, device = self.config, self.config.patch_size, self.state.device
        real_views = batch["image"].to(device) / c.generator.value_scale
        b = real_views.shape[0]
        patches = self.sampler.sample(b, engine.state.iteration, self.rng, device)
        real = sample_image_patches(real_views, patches).view(b, 1, p, p).requires_grad_(True)
        fake = self._fake_patches(patches, b).view(b, 1, p, p)
        # discriminator step: non-saturating loss + R1 on real patches
        self.discriminator.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        d_real = self.inferer(real, self.discriminator, patches.scale)
        d_fake = self.inferer(fake.detach(), self.discriminator, patches.scale)
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        (loss_d + 0.5 * c.r1_weight * r1).backward()
        _average_gradients([self.discriminator])
        self.optimizer_d.step()
        # generator step
        self.discriminator.requires_grad_(False)
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g = F.softplus(-self.inferer(fake, self.discriminator, patches.scale)).mean()
        terms = self._reconstruction_terms(batch, patches, real)
        weights = {"code": c.code_weight, "view": c.view_weight, "volume": c.volume_weight}
        total_g = loss_g + sum(weights[name] * value for name, value in terms.items())
        total_g.backward()
        _average_gradients([self.generator, self.start.codes])
        self.optimizer_g.step()
        return [{"loss": loss_d.item() + total_g.item(), "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                 "r1": r1.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
                 **{f"loss_{name}": value.item() for name, value in terms.items()}}]  # fmt: skip


class PriorSamples:
    """Every ``every`` iterations and at the end: 4 fixed latents x 4 angles rendered to a PNG grid
    (``path``) and, with a ``tensorboard_dir``, to TensorBoard as ``samples``. Main process only.

    Args:
        generator: the generator to render (the EMA copy).
        geometry: the training orbit in the generator's frame.
        path: the PNG file.
        every: iterations between renders.
        tensorboard_dir: TensorBoard log folder, or ``None``.
    """

    def __init__(
        self, generator: RadianceFieldGenerator, geometry: ProjectionGeometry, path: str | Path, every: int,
        tensorboard_dir: str | Path | None = None,
    ) -> None:  # fmt: skip
        self.generator, self.geometry, self.path, self.every = generator, geometry, Path(path), every
        self.tensorboard_dir = tensorboard_dir
        device = next(generator.parameters()).device
        self.latents = generator.sample_latents(4, torch.Generator().manual_seed(1234), device)
        self._writer: Any = None

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            every_and_at_end(engine, self.every, self)

    def __call__(self, engine: Engine) -> None:
        grid = _sample_grid(self.generator, self.geometry, self.latents, self.path)
        if self.tensorboard_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir))
        self._writer.add_image("samples", grid[None], engine.state.iteration, dataformats="CHW")
        self._writer.flush()


def prior_validation_set(dataset: Dataset, subjects: int) -> Subset:
    """The validation views: the first ``subjects`` training subjects at the orbit's first angle
    and the angle nearest a quarter turn from it (items ``subject * num_views + view``)."""
    angles = torch.tensor(dataset.angles_deg)
    quarter = int(((angles - angles[0] - 90.0 + 180.0) % 360.0 - 180.0).abs().argmin())
    views = sorted({0, quarter})
    count = min(subjects, dataset.num_subjects)
    return Subset(dataset, [s * len(angles) + v for s in range(count) for v in views])


class SubjectViewBatch:
    """MONAI ``prepare_batch`` of prior validation: a batch of views -> ``(subject index, real views
    (B, 1, H, W) line integrals, (angles,), {})``, the inferer's inputs and the metrics' labels."""

    def __call__(self, batchdata: dict[str, torch.Tensor], device=None, non_blocking: bool = False, **_: Any):
        index, angles = batchdata["index"].to(device), batchdata["angle_deg"].to(device)
        return index, batchdata["image"][:, None].to(device, non_blocking=non_blocking), (angles,), {}


class SubjectViewInferer(Inferer):
    """Render training subjects from their learned codes: ``inferer(index, generator, angles_deg)``
    gives ``(B, 1, H, W)`` line integrals (display units times ``value_scale``).

    Args:
        codes: the subject codes.
        geometry: the training orbit in the generator's frame.
    """

    def __init__(self, codes: SubjectCodes, geometry: ProjectionGeometry) -> None:
        super().__init__()
        self.codes, self.geometry = codes, geometry

    def __call__(self, index: torch.Tensor, network: RadianceFieldGenerator, angles_deg: torch.Tensor) -> torch.Tensor:
        z_s, z_a = self.codes(index)
        views = [network.render_views(z_s[i : i + 1], z_a[i : i + 1], self.geometry, angles_deg[i : i + 1])[0]
                 for i in range(index.shape[0])]  # fmt: skip
        return torch.stack(views)[:, None] * network.config.value_scale


def prior_evaluator(
    start: PriorStart, network: RadianceFieldGenerator, dataset: Dataset, geometry: ProjectionGeometry,
    config: PriorConfig, run: RunState, tensorboard_dir: str | Path | None = None,
) -> SupervisedEvaluator:  # fmt: skip
    """The validation workflow of :attr:`PriorConfig.validate_every` (what ``train.json`` builds as
    ``validate#evaluator``): MONAI's ``SupervisedEvaluator`` over :func:`prior_validation_set` with
    :class:`SubjectViewInferer`, MONAI's PSNR and SSIM metric handlers (explicit data range), the
    metrics logged by ``StatsHandler`` and, with a ``tensorboard_dir``, ``TensorBoardStatsHandler``
    at the training iteration (from ``run``)."""
    data_range = config.generator.value_scale
    pairs = from_engine([CommonKeys.PRED, CommonKeys.LABEL])
    handlers: list[Any] = [StatsHandler(iteration_log=False, name=_LOGGER)]
    if tensorboard_dir is not None:
        handlers.append(TensorBoardStatsHandler(log_dir=str(tensorboard_dir), iteration_log=False,
                                                global_epoch_transform=lambda _: run.engine.state.iteration))  # fmt: skip
    return SupervisedEvaluator(
        device=next(network.parameters()).device,
        val_data_loader=DataLoader(prior_validation_set(dataset, config.validation_subjects), batch_size=4),
        network=network,
        prepare_batch=SubjectViewBatch(),
        inferer=SubjectViewInferer(start.codes, geometry),
        key_val_metric={"val_psnr": PeakSignalToNoiseRatio(max_val=data_range, output_transform=pairs)},
        additional_metrics={"val_ssim": IgniteMetricHandler(SSIMMetric(2, data_range=data_range), output_transform=pairs)},
        val_handlers=handlers,
    )


def train_prior(
    dataset: Dataset,
    geometry: str | ProjectionGeometry,
    config: PriorConfig | None = None,
    work_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    restart: bool = False,
) -> PriorResult:
    """Train a generator and a patch discriminator adversarially on a dataset of views.

    Builds the components of the module docstring (as ``bundle/configs/train.json`` does) and
    runs one epoch of ``config.max_iterations`` iterations.

    Args:
        dataset: items ``{"image": (H, W) line integrals, ...}`` with an ``angles_deg`` attribute
            (the orbit angles to draw generated views from).
        geometry: the views' acquisition; the generator's scene is centred on its isocenter.
        config: options (default :class:`PriorConfig`).
        work_dir: checkpoints (``prior_checkpoint_<iteration>.pt``) and ``samples.png``; a
            checkpoint there of the same inputs (data, geometry, generator) is resumed, one of other
            inputs refused.
        tensorboard_dir: TensorBoard logs (losses, sample renders).
        device: ``cpu`` or ``cuda`` (in a distributed run, this rank's device).
        progress: show a progress bar (rank 0).
        restart: discard checkpoints of other inputs in ``work_dir`` and start afresh.

    Returns:
        The EMA generator (or the generator without EMA) and the run statistics.
    """
    config = config or PriorConfig()
    device = torch.device(device)
    geo = orbit_geometry(geometry)
    loader = prior_data_loader(dataset, config)
    shows_progress = progress and idist.get_rank() == 0
    prepare_training_views(dataset, shows_progress)
    torch.manual_seed(config.seed)
    start = PriorStart(RadianceFieldGenerator(config.generator).to(device), dataset, config, device, shows_progress)
    discriminator = PatchDiscriminator(1, config.discriminator_channels, config.discriminator_scales).to(device)
    optimizer_g = generator_optimizer(start.generator, start.codes, config)
    optimizer_d = discriminator_optimizer(discriminator, config)
    ema = None if config.ema_decay is None else EMAHandler(start.generator, momentum=1.0 - config.ema_decay)
    final = start.generator if ema is None else ema.ema_model
    run = prior_run_state(config, dataset, geo)
    to_save = {"generator": start.generator, "discriminator": discriminator, "optimizer_g": optimizer_g,
               "optimizer_d": optimizer_d, "subject_codes": start.codes, "run": run}  # fmt: skip
    if ema is not None:
        to_save["ema"] = ema.ema_model
    handlers: list[Any] = [StopOnNan()]
    if work_dir is not None:
        handlers.append(PriorSamples(final, geo, Path(work_dir) / "samples.png", config.sample_every, tensorboard_dir))
    evaluator = None
    if config.validates:
        evaluator = prior_evaluator(start, final, dataset, geo, config, run, tensorboard_dir)
        handlers.append(ValidationHandler(config.validate_every, evaluator, epoch_level=False))
    handlers += training_handlers(
        to_save, prefix=CHECKPOINT_PREFIX, max_iterations=config.max_iterations, log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, budget_s=config.budget_s, work_dir=work_dir,
        tensorboard_dir=tensorboard_dir, progress=progress, logger=_LOGGER, restart=restart,
    )  # fmt: skip
    trainer = PriorTrainer(device, 1, loader, start, discriminator, optimizer_g, optimizer_d, geo, config,
                           epoch_length=config.max_iterations, ema=ema, train_handlers=handlers)  # fmt: skip
    if trainer.state.iteration < config.max_iterations:
        trainer.run()
    result = trainer.result(run.elapsed_s)
    result.validation = {} if evaluator is None else {k: float(v) for k, v in evaluator.state.metrics.items()}
    logging.getLogger(_LOGGER).info(f"prior: {result.iterations} iterations in {result.seconds:.0f} s")
    return result
