"""Shared test helpers: the analytic grid of the rendering tests, a small cone-beam scanner and a
tiny generative setup."""

from __future__ import annotations

import torch

from monai_gnerf.engines import PriorConfig, ReconstructionConfig, reconstruct
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.networks.generator import GeneratorConfig

VOXEL_MM = 1.6
GRID = 128
TINY_GENERATOR = GeneratorConfig(architecture="graf", shape_dim=32, num_samples=16, hidden_features=32, hidden_layers=2)
TINY_GRID_GENERATOR = GeneratorConfig(architecture="grid", shape_dim=32, num_samples=16, grid_size=8, grid_channels=16)


def small_cone(angle_step_deg: int, detector_pixels: int, pixel_mm: float) -> ProjectionGeometry:
    """A full-circle cone beam (SAD 500 mm, SDD 800 mm) around the world origin, a view every
    ``angle_step_deg`` degrees, a square detector."""
    return ProjectionGeometry(
        beam="cone", angles_deg=tuple(range(0, 360, angle_step_deg)), detector_shape=(detector_pixels, detector_pixels),
        pixel_spacing_mm=(pixel_mm, pixel_mm), source_to_isocenter_mm=500.0, source_to_detector_mm=800.0,
        isocenter_mm=(0.0, 0.0, 0.0),
    )  # fmt: skip


def grid_fit_psnr(
    projections: torch.Tensor, geometry: ProjectionGeometry, shape, affine: torch.Tensor, truth: torch.Tensor,
    option: str, values,
) -> dict:  # fmt: skip
    """3D PSNR of a 150-iteration default-field fit for each value of one ``ReconstructionConfig``
    option; every output must lie on the output grid, with its affine."""
    scores = {}
    for value in values:
        config = ReconstructionConfig(max_iterations=150, budget_s=None, rays_per_batch=8192, **{option: value})
        result = reconstruct(projections, geometry, shape, affine, config, reference=truth, progress=False)
        assert tuple(result.volume.shape) == tuple(shape) and torch.equal(result.volume.affine, affine)
        scores[value] = result.metrics["psnr_3d"]
    return scores


def tiny_geometry(views: int = 36):
    return load_geometry("mednerf_chest").with_detector_shape(32, 32).with_uniform_angles(views).resolved((0, 0, 0))


def tiny_config(iterations: int, **kwargs) -> PriorConfig:
    options = dict(generator=TINY_GENERATOR, patch_size=16, batch_size=4, max_iterations=iterations, log_every=50,
                   sample_every=10_000, checkpoint_every=10_000, anneal_iterations=100, ema_decay=None,
                   lr_generator=2e-3, lr_discriminator=1e-3, view_weight=0.0, volume_weight=0.0)  # fmt: skip
    options.update(kwargs)
    return PriorConfig(**options)




def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> ``[(step, value), ...]``."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(folder).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars
