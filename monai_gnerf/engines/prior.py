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

The loop is an Ignite ``Engine`` with the shared handlers of :mod:`monai_gnerf.engines.handlers`
(stdout/TensorBoard logging, progress bar, wall-time budget, checkpoints of both networks, both
optimizers and the EMA, resume, Ctrl-C), plus sample renders written as PNG (and to TensorBoard).
In a ``torch.distributed`` run (``torchrun``; gloo on CPU, nccl on GPUs) every rank draws its own
share of the data (``DistributedSampler``), gradients are averaged over ranks before each step,
and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import ignite.distributed as idist
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ignite.engine import Engine, Events
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from monai_gnerf.config import Config, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, config_to_dict
from monai_gnerf.engines.handlers import RunState, attach_training_handlers, run_engine
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io import atomic_output_file, fingerprint
from monai_gnerf.data.phantoms import centered_grid
from monai_gnerf.networks import GeneratorConfig, PatchDiscriminator, PCAVolumeModel, RadianceFieldGenerator
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.render import PatchRaySampler, sample_image_patches, sample_volume_at

__all__ = ["PriorConfig", "PriorResult", "SubjectCodes", "train_prior"]

CHECKPOINT_PREFIX = "prior"
_LOGGER = "monai_gnerf.engines.prior"


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
    """

    generator: RadianceFieldGenerator
    geometry: ProjectionGeometry
    iterations: int
    seconds: float
    losses: dict[str, float]
    latent_mean: torch.Tensor | None = None
    latent_covariance: torch.Tensor | None = None


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


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of a distributed run, ``(0, 1)`` otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(module: nn.Module, world_size: int) -> None:
    """All-reduce and average gradients over ranks (the DistributedDataParallel reduction)."""
    if world_size == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size


def _broadcast_parameters(modules: list[nn.Module], world_size: int) -> None:
    """Start every rank from rank 0's weights."""
    if world_size == 1:
        return
    for module in modules:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def _batches(dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
    """Endless shuffled batches; each rank draws its own share in a distributed run."""
    epoch = 0
    while True:
        if world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))
        yield from DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
        epoch += 1


def _orbit_geometry(geometry: str | ProjectionGeometry) -> ProjectionGeometry:
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


def _training_volumes(dataset: Dataset, size: int, extent_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training subject's attenuation (1/mm) at the voxel centres of a ``size^3`` grid over
    the scene cube, ``(N, size, size, size)`` indexed ``[x, y, z]``, and the grid's affine."""
    points, affine = centered_grid((size,) * 3, (2.0 * extent_mm / size,) * 3)
    points = points.float()
    return torch.stack([dataset.attenuation_at(i, points) for i in range(dataset.num_subjects)]), affine


def _initialize_from_pca(generator: RadianceFieldGenerator, codes: SubjectCodes, volumes: torch.Tensor, affine) -> None:
    """The PCA start of the module docstring (densities in units of the generator's ``scale_per_mm``)."""
    scale = generator.config.scale_per_mm
    pca = PCAVolumeModel.from_volumes(volumes / scale, affine)
    stddevs = pca.variances.sqrt()
    generator.field.initialize_from_pca(pca.mean, pca.components, stddevs)
    used = min(pca.num_components, codes.shape_dim)
    with torch.no_grad():
        codes.codes.zero_()
        for i, volume in enumerate(volumes / scale):
            codes.codes[i, :used] = pca.encode(volume)[:used] / stddevs[:used]


class _AdversarialStep:
    """One discriminator and one generator update (the engine's process function)."""

    def __init__(self, generator, discriminator, ema, dataset, geometry, config: PriorConfig, device) -> None:
        self.generator, self.discriminator, self.ema = generator, discriminator, ema
        self.geometry, self.config, self.device = geometry, config, device
        self.rank, self.world_size = _world()
        self.rng = torch.Generator().manual_seed(config.seed + 7919 * self.rank)
        self.batches = _batches(dataset, config.batch_size, config.seed, self.rank, self.world_size)
        self.angles = torch.tensor(dataset.angles_deg, dtype=torch.float32)
        self.sampler = PatchRaySampler(geometry, config.patch_size, config.min_scale, 1.0, config.anneal_iterations)
        self.dataset = dataset
        g = config.generator
        self.codes = SubjectCodes(dataset.num_subjects, g.shape_dim, g.appearance_dim, config.seed).to(device)
        groups = [{"params": list(generator.parameters())}]
        if config.learns_subject_codes:
            groups.append({"params": list(self.codes.parameters()), "lr": 10.0 * config.lr_generator})
        self.opt_g = torch.optim.Adam(groups, lr=config.lr_generator, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=(0.0, 0.99))
        if config.needs_volumes:
            size = g.grid_size if g.architecture == "grid" else config.volume_grid_size
            self.volumes, self.volume_affine = _training_volumes(dataset, size, g.extent_mm)
            self.volumes = self.volumes.to(device)

    def _reconstruction_terms(self, batch: dict[str, Any], patches, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-subject terms of the module docstring (empty when they are off)."""
        c = self.config
        if not c.learns_subject_codes:
            return {}
        index = batch["index"].to(self.device)
        z_s, z_a = self.codes(index)
        terms = {"code": (z_s.pow(2).mean() + z_a.pow(2).mean()) / 2.0}
        if c.view_weight > 0:
            o, d = self.geometry.rays_at(batch["angle_deg"].to(self.device), patches.rows, patches.cols)
            terms["view"] = F.mse_loss(self.generator(z_s, z_a, o, d, jitter=self.rng), real.detach().flatten(1))
        if c.volume_weight > 0:
            extent = c.generator.extent_mm
            points = (torch.rand(index.shape[0], c.volume_points, 3, generator=self.rng) * 2.0 - 1.0) * extent
            points = points.to(self.device)
            truth = torch.stack(
                [sample_volume_at(self.volumes[int(i)], self.volume_affine, p) for i, p in zip(index, points)]
            )
            terms["volume"] = F.mse_loss(self.generator.attenuation(points, z_s, z_a), truth) / MU_WATER_PER_MM**2
        return terms

    def _fake_patches(self, patches, batch: int) -> torch.Tensor:
        angles = self.angles[torch.randint(len(self.angles), (batch,), generator=self.rng)].to(self.device)
        o, d = self.geometry.rays_at(angles, patches.rows, patches.cols)
        z_s, z_a = self.generator.sample_latents(batch, self.rng, self.device)
        return self.generator(z_s, z_a, o, d, jitter=self.rng)

    def __call__(self, engine: Engine, _: Any) -> dict[str, float]:
        c, p = self.config, self.config.patch_size
        batch = next(self.batches)
        real_views = batch["image"].to(self.device) / c.generator.value_scale
        b = real_views.shape[0]
        patches = self.sampler.sample(b, engine.state.iteration, self.rng, self.device)
        real = sample_image_patches(real_views, patches).view(b, 1, p, p).requires_grad_(True)
        fake = self._fake_patches(patches, b).view(b, 1, p, p)
        # discriminator step: non-saturating loss + R1 on real patches
        self.discriminator.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        d_real = self.discriminator(real, patches.scale)
        d_fake = self.discriminator(fake.detach(), patches.scale)
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        (loss_d + 0.5 * c.r1_weight * r1).backward()
        _average_gradients(self.discriminator, self.world_size)
        self.opt_d.step()
        # generator step
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = F.softplus(-self.discriminator(fake, patches.scale)).mean()
        terms = self._reconstruction_terms(batch, patches, real)
        weights = {"code": c.code_weight, "view": c.view_weight, "volume": c.volume_weight}
        total_g = loss_g + sum(weights[name] * value for name, value in terms.items())
        total_g.backward()
        _average_gradients(self.generator, self.world_size)
        _average_gradients(self.codes, self.world_size)
        self.opt_g.step()
        self._update_ema()
        return {"loss": loss_d.item() + total_g.item(), "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                "r1": r1.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
                **{f"loss_{name}": value.item() for name, value in terms.items()}}  # fmt: skip

    def _update_ema(self) -> None:
        if self.config.ema_decay is None:
            return
        with torch.no_grad():
            for e, g in zip(self.ema.parameters(), self.generator.parameters()):
                e.lerp_(g, 1.0 - self.config.ema_decay)


def _attach_samples(engine: Engine, step: _AdversarialStep, work_dir: Path, tensorboard_dir: str | Path | None) -> None:
    """Every ``sample_every`` iterations: render 4 fixed latents x 4 angles to PNG (+ TensorBoard)."""
    latents = step.generator.sample_latents(4, torch.Generator().manual_seed(1234), step.device)
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))

    @engine.on(Events.ITERATION_COMPLETED(every=step.config.sample_every) | Events.COMPLETED)
    def _render(e: Engine) -> None:
        grid = _sample_grid(step.ema, step.geometry, latents, work_dir / "samples.png")
        if writer is not None:
            writer.add_image("samples", grid[None], e.state.iteration, dataformats="CHW")
            writer.flush()


def _data_fingerprint(dataset: Dataset, geometry: ProjectionGeometry) -> str:
    """The training data's identity: its size, its first and last views and the geometry."""
    return fingerprint(len(dataset), dataset[0]["image"], dataset[len(dataset) - 1]["image"], geometry.to_dict())


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
    geo = _orbit_geometry(geometry)
    if len(dataset) < config.batch_size * _world()[1]:
        raise GnerfInputError(
            f"the dataset has {len(dataset)} views, fewer than one batch ({config.batch_size}) per rank."
        )
    if config.needs_volumes and not hasattr(dataset, "attenuation_at"):
        raise GnerfInputError(
            "volume_weight and pca_init need training data with volumes (phantoms or CTs); "
            "for views alone set volume_weight 0 and pca_init False."
        )
    torch.manual_seed(config.seed)
    generator = RadianceFieldGenerator(config.generator).to(device)
    discriminator = PatchDiscriminator(1, config.discriminator_channels, config.discriminator_scales).to(device)
    rank, world_size = _world()
    _broadcast_parameters([generator, discriminator], world_size)
    step = _AdversarialStep(generator, discriminator, None, dataset, geo, config, device)
    if config.starts_from_pca:
        _initialize_from_pca(generator, step.codes, step.volumes.cpu(), step.volume_affine)
    step.ema = ema = copy.deepcopy(generator).requires_grad_(False)
    engine = Engine(step)
    run = RunState({"kind": "generative prior", "generator": config_to_dict(config.generator),
                    "detector_shape": list(geo.detector_shape), "patch_size": config.patch_size,
                    "inputs": _data_fingerprint(dataset, geo)})  # fmt: skip
    to_save = {"generator": generator, "discriminator": discriminator, "ema": ema, "optimizer_g": step.opt_g,
               "optimizer_d": step.opt_d, "subject_codes": step.codes, "trainer": engine, "run": run}  # fmt: skip
    main = rank == 0
    if world_size > 1:
        idist.sync()  # Ignite's Checkpoint (rank 0 only) would otherwise start a collective alone and hang
    if main and work_dir is not None:
        _attach_samples(engine, step, Path(work_dir), tensorboard_dir)
    saver = attach_training_handlers(
        engine, to_save, prefix=CHECKPOINT_PREFIX, max_iterations=config.max_iterations, log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, budget_s=config.budget_s, work_dir=work_dir,
        tensorboard_dir=tensorboard_dir, progress=progress, logger=_LOGGER, main_process=main, restart=restart,
    )  # fmt: skip
    run_engine(engine, config.max_iterations, saver, _LOGGER)
    final = ema if config.ema_decay is not None else generator
    losses = dict(engine.state.output) if isinstance(engine.state.output, dict) else {}
    logging.getLogger(_LOGGER).info(f"prior: {engine.state.iteration} iterations in {run.elapsed_s:.0f} s")
    mean, covariance = step.codes.distribution() if config.learns_subject_codes else (None, None)
    return PriorResult(final, geo, engine.state.iteration, run.elapsed_s, losses, mean, covariance)
