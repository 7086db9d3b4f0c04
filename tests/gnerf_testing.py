"""Shared test helpers: the analytic grid of the rendering tests and a tiny generative setup."""

from __future__ import annotations

from monai_gnerf.engines import PriorConfig
from monai_gnerf.geometry import load_geometry
from monai_gnerf.networks.generator import GeneratorConfig

VOXEL_MM = 1.6
GRID = 128
TINY_GENERATOR = GeneratorConfig(architecture="graf", shape_dim=32, num_samples=16, hidden_features=32, hidden_layers=2)
TINY_GRID_GENERATOR = GeneratorConfig(architecture="grid", shape_dim=32, num_samples=16, grid_size=8, grid_channels=16)


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
