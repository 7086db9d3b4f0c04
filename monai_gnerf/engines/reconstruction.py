"""Sparse-view reconstruction: fit an attenuation field to projections with an Ignite engine.

``reconstruct`` is the one-call API used by the CLI, the demo and the bundle:

* ``method="grid"`` (default): a :class:`~monai_gnerf.networks.GridAttenuationField` (multi-
  resolution dense grids, initialized from FDK) rendered with the fast Joseph projector, with
  total-variation regularization. The CPU-friendly choice (``benchmarks/sparse_view.py``). Its
  voxels are as fine as the detector resolves (up to half the output voxel), it reaches past the
  output box's end faces where the object goes on beyond them, and the output is cropped from it
  and averaged over each output voxel (:mod:`monai_gnerf.engines.field_grids`).
* ``method="naf"``: NAF, a hash-grid encoding + MLP rendered by stratified ray sampling.
* ``method="nerf"``: a plain frequency-encoded MLP (the NeRF baseline).
* ``method="fdk"``: the analytic FDK/FBP baseline, no training.

Training samples random ray batches from all views, minimizes the normalized squared error of
line integrals with Adam under a cosine learning-rate schedule, and stops at an iteration or
wall-time budget. Handlers: Ignite progress bar, MONAI ``StatsHandler`` (stdout) and optional
``TensorBoardStatsHandler``, checkpoints of field, optimizer, scheduler and engine every
``checkpoint_every`` iterations and on Ctrl-C, resume from the newest checkpoint, and optional
validation against a reference volume (3D PSNR). Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.data import MetaTensor
from torch import nn

from monai_gnerf.config import Config, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from monai_gnerf.engines.field_grids import field_grid
from monai_gnerf.engines.handlers import RunState, attach_training_handlers, every_and_at_end, run_engine
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.io.checkpoints import fingerprint
from monai_gnerf.losses import TotalVariationLoss
from monai_gnerf.metrics.image import normalize_to_reference, psnr, ssim
from monai_gnerf.networks import (
    AttenuationField,
    FrequencyEncoding,
    GridAttenuationField,
    HashGridEncoding,
    MaskedField,
)
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.render import VolumeProjector, clip_rays_to_box, fdk, index_box, sample_rays, world_to_index_rays

__all__ = [
    "FIELD_BYTES_PER_VOXEL",
    "FieldComponents",
    "FieldProjector",
    "FieldTrainer",
    "ProjectionRays",
    "ReconstructionConfig",
    "ReconstructionResult",
    "build_field",
    "reconstruct",
]

Method = Literal["grid", "naf", "nerf", "fdk"]
CHECKPOINT_PREFIX = "reconstruction"
FIELD_BYTES_PER_VOXEL = 48
"""Memory per grid voxel of a reconstruction, an upper estimate: the field's values, their gradient
and Adam's two moments, the FDK start, the mask and the output volume, float32 each, plus the
coarser levels (x 8/7)."""
_LOGGER = "monai_gnerf.engines.reconstruction"
_DEFAULT_LR = {"grid": 0.08, "naf": 0.01, "nerf": 5e-4}
_DEFAULT_RAYS = {"grid": 32768, "naf": 2048, "nerf": 1024}
_TV_PER_VIEW = 0.16
_BYTES_PER_RAY_SAMPLE = {"grid": 64, "naf": 1536, "nerf": 1536}
"""Memory per ray sample of one iteration, an upper estimate (positions, encodings, activations and
their gradients; measured on 2 CPUs: about 40 bytes for the grid, 1.1 and 1.4 KB for naf and nerf)."""


@dataclass
class ReconstructionConfig(Config):
    """Options of :func:`reconstruct` (all serializable).

    Attributes:
        method: ``grid``, ``naf``, ``nerf`` or ``fdk``.
        max_iterations: iteration budget.
        budget_s: wall-time budget in seconds (across resumes); ``None`` = iterations only.
        rays_per_batch: rays per iteration; ``None`` = a per-method default.
        samples_per_ray: stratified samples per ray for ``naf`` and ``nerf``.
        learning_rate: Adam step; ``None`` = a per-method default. ``grid``'s, 0.08, was chosen on
            the chest CT at 10 and 50 views in 150 s and on the suite of ``benchmarks/`` in 60 s:
            over 0.04 it gave +0.05 and +0.19 dB on the chest, +2.5 dB on the knee, +0.6 dB on the
            limited arc, +0.2 dB on the 10-view head, +0.05 dB on the 50-view head; 0.16 gave less
            than 0.08 on the 10-view head and the limited arc (0.02 to 0.04 gave the chest +0.4 dB).
        final_lr_fraction: cosine schedule ends at this fraction of the learning rate.
        tv_weight: weight of the isotropic total variation (``grid`` only), on attenuation in
            units of water; ``None`` = ``0.16 / views``: sparser data need more regularization
            (measured on the example chest CT at 10 views, 150 s: 0.016 beat 0.032 by 0.1 dB; with
            the earlier anisotropic TV, 0.008 gave +2.3 dB over 0.002 and 0.016 another +0.4 dB;
            at 50 views 0.0032 and 0.0016 are within 0.05 dB).
        grid_levels: levels of the multi-resolution grid.
        supersample: ``grid`` only: the field's voxels are this many times finer than the output
            grid's on each axis, and the output is their average over each output voxel. A
            detector that resolves finer than a voxel records detail no voxel of the output size
            can hold; fitted at that size, its line integrals leave errors all over the volume.
            ``None`` = from the geometry (:func:`~monai_gnerf.engines.field_grids.field_supersampling`):
            the output voxel over the detector pixel at the isocenter, rounded, from 1 to 2 (8 times
            the voxels). The head phantom with the ``naf`` preset (1 mm pixels at the isocenter,
            2.5 mm grid, 50 views, 150 iterations): 32.4 dB at 1, 39.5 dB at 2.
        axial_margin_mm: field methods: how far the field reaches past the output box's two end
            faces along the rotation axis, mm, to hold what rays crossing those faces see beyond
            them (the long-object problem); the output is cropped from it. ``None`` = from the
            rays and the projections (:func:`~monai_gnerf.engines.field_grids.axial_margins`): as far
            as rays crossing the box run beyond each face within its cross-section, and none where
            the projections show nothing beyond. ``0`` = the output box only. A procedural knee
            with the ``difnet`` preset, 10 views, 60 s (``benchmarks/long_object.py``): 33.6 dB
            without, 47.7 dB with.
        init_fdk: initialize ``grid`` from the FDK reconstruction.
        seed: random seed.
        log_every: iterations between log lines.
        checkpoint_every: iterations between checkpoints (when a work folder is given).
        validate_every: iterations between validations (when a reference is given).
    """

    method: Method = "grid"
    max_iterations: PositiveInt = 1500
    budget_s: PositiveFloat | None = 120.0
    rays_per_batch: PositiveInt | None = None
    samples_per_ray: PositiveInt = 96
    learning_rate: PositiveFloat | None = None
    final_lr_fraction: Fraction = 0.05
    tv_weight: NonNegativeFloat | None = None
    grid_levels: PositiveInt = 1
    supersample: PositiveInt | None = None
    axial_margin_mm: NonNegativeFloat | None = None
    init_fdk: bool = True
    seed: int = 0
    log_every: PositiveInt = 100
    checkpoint_every: PositiveInt = 250
    validate_every: PositiveInt = 250

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else _DEFAULT_LR.get(self.method, 0.01)

    @property
    def batch(self) -> int:
        return self.rays_per_batch if self.rays_per_batch is not None else _DEFAULT_RAYS.get(self.method, 4096)

    @property
    def batch_bytes(self) -> int:
        """Memory of one iteration's ray batch, an upper estimate (none for FDK)."""
        return self.batch * self.samples_per_ray * _BYTES_PER_RAY_SAMPLE.get(self.method, 0)


@dataclass
class ReconstructionResult:
    """Attenuation volume (1/mm, ``MetaTensor`` with the grid affine) and run statistics."""

    volume: MetaTensor
    iterations: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


class ProjectionRays:
    """All detector rays of a projection set in the grid's index space, with their line integrals.

    Rays that miss the reconstruction box are dropped (nothing in the grid can explain them).
    """

    def __init__(
        self,
        projections: torch.Tensor,
        geometry: ProjectionGeometry,
        shape: Sequence[int],
        affine: torch.Tensor,
        device: torch.device,
    ) -> None:
        origins, directions = geometry.rays(dtype=torch.float64)
        o, d = world_to_index_rays(origins.reshape(-1, 3), directions.reshape(-1, 3), affine)
        t_near, t_far = clip_rays_to_box(o, d, *index_box(shape))
        hit = t_far > t_near
        self.origins = o[hit].float().to(device)
        self.directions = d[hit].float().to(device)
        self.t_near = t_near[hit].float().to(device)
        self.t_far = t_far[hit].float().to(device)
        self.values = projections.reshape(-1)[hit.to(projections.device)].float().to(device)
        if self.values.numel() == 0:
            raise GnerfInputError("no projection ray crosses the reconstruction grid: check geometry and grid.")
        self.scale = float(self.values.square().mean().clamp(min=1e-12))
        self.num_views = geometry.num_views
        self.longest_mm = float((self.t_far - self.t_near).max())

    def __len__(self) -> int:
        return self.values.numel()


def build_field(
    config: ReconstructionConfig,
    shape: Sequence[int],
    initial_per_mm: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> nn.Module:
    """The field of a reconstruction method on a grid, optionally masked (mNeRF)."""
    if config.method == "grid":
        net: nn.Module = GridAttenuationField(shape, config.grid_levels, initial_per_mm=initial_per_mm)
    elif config.method == "naf":
        net = AttenuationField(HashGridEncoding(levels=8, max_resolution=max(shape)), hidden_features=32)
    elif config.method == "nerf":
        net = AttenuationField(FrequencyEncoding(num_frequencies=8), hidden_features=128, hidden_layers=4)
    else:
        raise GnerfInputError(f"method {config.method!r} has no field.")
    return net if mask is None else MaskedField(net, mask)


def _index_to_normalized(points: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    return points * (2.0 / (shape - 1)) - 1.0


def reconstruct(
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    shape: Sequence[int],
    affine: torch.Tensor,
    config: ReconstructionConfig | None = None,
    mask: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    work_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    restart: bool = False,
    components: FieldComponents | None = None,
) -> ReconstructionResult:
    """Reconstruct attenuation (1/mm) on a grid from line-integral projections.

    Args:
        projections: line integrals ``(views, rows, cols)``.
        geometry: their geometry, isocenter resolved.
        shape: reconstruction grid ``(I, J, K)`` of the output (the field's may be finer and
            longer: ``config.supersample``, ``config.axial_margin_mm``).
        affine: grid voxel index -> world mm; the output carries it, so it overlays the source.
        config: method and budgets (default: ``ReconstructionConfig()``).
        mask: optional support mask on the output grid (mNeRF): attenuation is zero outside.
        reference: optional true attenuation on the grid, for validation metrics.
        work_dir: folder for checkpoints; a checkpoint there of the same inputs (projections,
            geometry, grid, mask, method) is resumed, one of other inputs refused.
        tensorboard_dir: if given, losses and metrics are written for TensorBoard.
        device: ``cpu`` or ``cuda``.
        progress: show a progress bar.
        restart: discard checkpoints of other inputs in ``work_dir`` and start afresh.
        components: the field, optimizer, projector and extra handlers to use instead of the
            defaults (:class:`FieldComponents`; ``bundle/configs/reconstruct.json`` builds them).

    Returns:
        The volume and the run's statistics.
    """
    config = config or ReconstructionConfig()
    device = torch.device(device)
    affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
    shape = tuple(int(s) for s in shape)
    projections = projections.as_subclass(torch.Tensor) if isinstance(projections, MetaTensor) else projections
    if geometry.isocenter_mm is None:
        raise GnerfInputError("the projection geometry has no isocenter; use the geometry.json written with the DRRs.")
    if tuple(projections.shape) != (geometry.num_views, *geometry.detector_shape):
        raise GnerfInputError(
            f"projections {tuple(projections.shape)} do not match the geometry "
            f"({geometry.num_views}, {geometry.detector_shape[0]}, {geometry.detector_shape[1]})."
        )
    start = time.perf_counter()
    projections = projections.to(device=device, dtype=torch.float32)
    grid = field_grid(config, geometry, shape, affine, projections)
    field_shape, field_affine = grid.shape, grid.affine
    initial = fdk(projections, geometry, field_shape, field_affine) if config.method == "fdk" or config.init_fdk else None
    if config.method == "fdk":
        volume = initial.clamp(min=0.0) if mask is None else initial.clamp(min=0.0) * (mask.to(device) > 0)
        metrics = _volume_metrics(volume, reference, with_ssim=True)
        return ReconstructionResult(MetaTensor(volume, affine=affine), 0, time.perf_counter() - start, metrics)
    parts = components or FieldComponents()
    torch.manual_seed(config.seed)
    field_mask = None if mask is None else grid.to_field(mask)
    net = parts.field(config, field_shape, initial if config.method == "grid" else None, field_mask).to(device)
    rays = ProjectionRays(projections, geometry, field_shape, field_affine, device)
    inputs = fingerprint(projections, geometry.to_dict(), affine, mask if mask is not None else "no mask")
    run_state = RunState({"method": config.method, "shape": list(shape), "field_shape": list(field_shape),
                          "grid_levels": config.grid_levels, "inputs": inputs})  # fmt: skip
    optimizer = (parts.optimizer or functools.partial(torch.optim.Adam, lr=config.lr))(net.parameters())
    projector = parts.projector(field_shape, field_affine, rays.longest_mm / config.samples_per_ray, config.seed, device)
    engine = FieldTrainer(net, rays, optimizer, projector, config, run_state)
    logging.getLogger(_LOGGER).info(
        f"{config.method}: {type(net).__name__} on {'x'.join(map(str, field_shape))}, {type(optimizer).__name__}, "
        f"{type(projector).__name__}"
    )

    def output_volume() -> torch.Tensor:
        return grid.to_output(net.voxels(field_shape))

    to_save = {"field": net, "optimizer": optimizer, "scheduler": engine.scheduler, "run": run_state}
    if reference is not None:
        _attach_validation(engine, output_volume, reference, config.validate_every, tensorboard_dir)
    attach_training_handlers(
        engine, to_save, prefix=CHECKPOINT_PREFIX, max_iterations=config.max_iterations, log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, budget_s=config.budget_s, work_dir=work_dir,
        tensorboard_dir=tensorboard_dir, progress=progress, logger=_LOGGER, restart=restart,
    )  # fmt: skip
    for handler in parts.handlers:
        handler.attach(engine)
    run_engine(engine, config.max_iterations)
    with torch.no_grad():
        volume = output_volume()
    metrics = _volume_metrics(volume, reference, with_ssim=True)
    if isinstance(engine.state.output, dict):
        metrics["data_loss"] = engine.state.output["data_loss"]  # last batch's normalized squared error
    return ReconstructionResult(MetaTensor(volume, affine=affine), engine.state.iteration, run_state.elapsed_s, metrics)


def _volume_metrics(volume: torch.Tensor, reference: torch.Tensor | None, with_ssim: bool = False) -> dict[str, float]:
    if reference is None:
        return {}
    estimate, truth = normalize_to_reference(volume.detach().cpu().float(), reference.detach().cpu().float())
    metrics = {"psnr_3d": psnr(estimate, truth, data_range=1.0)}
    if with_ssim:
        metrics["ssim_3d"] = ssim(estimate, truth, data_range=1.0)
    return metrics


class FieldProjector:
    """Line integrals of a field along ray segments in the grid's index space, and its TV term.

    A field that renders as a volume (``renders_as_volume``: the grid fields) is voxelized and
    integrated exactly by the Joseph projector (:class:`~monai_gnerf.render.VolumeProjector`),
    with the isotropic total variation of its voxels in units of water; an MLP field is sampled
    at stratified points ``step_mm`` apart (no TV).

    Args:
        shape: the grid ``(I, J, K)``.
        affine: grid voxel index -> world mm.
        step_mm: sample spacing along the rays of MLP fields.
        seed: seed of the sample jitter.
        device: device of the rays.
    """

    def __init__(self, shape: Sequence[int], affine: torch.Tensor, step_mm: float, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.shape, self.affine, self.step_mm = tuple(shape), affine, step_mm
        self.device = torch.device(device)
        self.shape_t = torch.tensor(self.shape, dtype=torch.float32, device=self.device)
        self.jitter = torch.Generator(device=self.device).manual_seed(seed)
        self.total_variation = TotalVariationLoss(unit=MU_WATER_PER_MM)

    def __call__(self, field: nn.Module, o: torch.Tensor, d: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor):
        """``(line integrals (N,), total variation ())`` of rays ``o + t d``, ``t`` in ``[t0, t1]``."""
        if getattr(field, "renders_as_volume", False):
            volume = field.voxels(self.shape)
            return VolumeProjector(volume, self.affine).integrate(o, d), self.total_variation(volume)
        samples = sample_rays(o, d, t0, t1, step_mm=self.step_mm, jitter=self.jitter)
        return samples.line_integral(field(_index_to_normalized(samples.points, self.shape_t))), torch.zeros((), device=self.device)


class FieldTrainer(Engine):
    """Fits a field to the rays of a projection set: an Ignite engine, one batch of random rays per iteration.

    Loss: the mean squared error of line integrals, normalized by the data's mean square, plus the
    TV term; Adam (or the given optimizer) under a cosine learning-rate schedule over the run's
    progress (iterations or wall time, whichever is further).

    Args:
        field: the attenuation field.
        rays: the projection set's rays (:class:`ProjectionRays`).
        optimizer: the optimizer of the field's parameters.
        projector: renders the field along rays (:class:`FieldProjector`).
        config: the reconstruction options (batch, budgets, TV weight, seed).
        run: the run's state (its elapsed time drives the schedule under a budget).

    Attributes:
        scheduler: the learning-rate schedule (checkpointed with the optimizer).
    """

    def __init__(
        self, field: nn.Module, rays: ProjectionRays, optimizer: torch.optim.Optimizer, projector: FieldProjector,
        config: ReconstructionConfig, run: RunState,
    ) -> None:  # fmt: skip
        super().__init__(self._step)
        self.field, self.rays, self.optimizer, self.projector = field, rays, optimizer, projector
        self.config, self.run_state = config, run
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._cosine_factor)
        self.tv_weight = config.tv_weight if config.tv_weight is not None else _TV_PER_VIEW / rays.num_views
        self.rng = torch.Generator(device=projector.device).manual_seed(config.seed)

    def _cosine_factor(self, step: int) -> float:
        c = self.config
        done = step / c.max_iterations
        if c.budget_s is not None:
            done = max(done, self.run_state.elapsed_s / c.budget_s)
        return c.final_lr_fraction + (1.0 - c.final_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    def _random_rays(self) -> torch.Tensor:
        """A batch of ray indices drawn with replacement, in ascending order: neighbouring rays of one
        view then sample neighbouring voxels, which makes the grid lookups and their scattered
        gradients cache-friendly (on the CPU, 10 views of the example CT: +7 % iterations per second)."""
        batch = (self.config.batch,)
        return torch.randint(len(self.rays), batch, generator=self.rng, device=self.projector.device).sort().values

    def _step(self, engine: Engine, _: Any) -> dict[str, float]:
        rays = self.rays
        self.field.train()
        self.optimizer.zero_grad(set_to_none=True)
        pick = self._random_rays()
        predicted, tv = self.projector(self.field, rays.origins[pick], rays.directions[pick], rays.t_near[pick],
                                       rays.t_far[pick])  # fmt: skip
        data_loss = F.mse_loss(predicted, rays.values[pick]) / rays.scale
        loss = data_loss + self.tv_weight * tv
        loss_value = loss.item()  # one device sync per step, also for the check
        if not math.isfinite(loss_value):
            raise GnerfInputError(f"the fit diverged at iteration {engine.state.iteration} (loss {loss_value}): "
                                  f"lower learning_rate (it is {self.config.lr:g}).")  # fmt: skip
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss_value, "data_loss": data_loss.item(), "tv": tv.item()}


@dataclass
class FieldComponents:
    """The swappable parts of a reconstruction (what :func:`reconstruct` builds by default).

    Attributes:
        field: ``factory(config, shape, initial_per_mm, mask) -> nn.Module`` (:func:`build_field`),
            on the field's grid (:func:`~monai_gnerf.engines.field_grids.field_grid`).
        optimizer: ``factory(parameters) -> Optimizer``; ``None``: Adam at ``config.lr``.
        projector: ``factory(shape, affine, step_mm, seed, device)`` (:class:`FieldProjector`), of
            the field's grid.
        handlers: extra handlers, attached after the standard ones (log, budget, checkpoints).
    """

    field: Callable[..., nn.Module] = build_field
    optimizer: Callable[..., torch.optim.Optimizer] | None = None
    projector: Callable[..., FieldProjector] = FieldProjector
    handlers: Sequence[Any] = ()


def _attach_validation(
    engine: Engine, volume: Callable[[], torch.Tensor], reference: torch.Tensor, every: int,
    tensorboard_dir: str | Path | None = None,
) -> None:  # fmt: skip
    """Every ``every`` iterations and at the end: 3D PSNR and SSIM of ``volume()`` against a reference volume
    (data range 1 after min-max normalization) into ``engine.state.metrics``, the log and, with a
    ``tensorboard_dir``, TensorBoard (``val_psnr_3d``, ``val_ssim_3d`` at the iteration)."""
    writer: list = []

    def _validate(e: Engine) -> None:
        with torch.no_grad():
            e.state.metrics.update(_volume_metrics(volume(), reference, with_ssim=True))
        logging.getLogger(_LOGGER).info(
            f"iteration {e.state.iteration}: 3D PSNR {e.state.metrics['psnr_3d']:.2f} dB, SSIM {e.state.metrics['ssim_3d']:.3f}"
        )
        if tensorboard_dir is None:
            return
        if not writer:
            from torch.utils.tensorboard import SummaryWriter

            writer.append(SummaryWriter(str(tensorboard_dir)))
        for name in ("psnr_3d", "ssim_3d"):
            writer[0].add_scalar(f"val_{name}", e.state.metrics[name], e.state.iteration)
        writer[0].flush()

    every_and_at_end(engine, every, _validate)
