"""The main job (``monai-gnerf demo``): both reconstructions of the embedded example CT, with figures.

* sparse view: :func:`~monai_gnerf.apps.sparse_view.sparse_view_demo` (FDK and the masked grid
  field from simulated cone-beam views; ``OUT/figure.png``);
* single view: :func:`~monai_gnerf.apps.generative.example_single_view` (one PA DRR through the
  shipped prior; ``OUT/single_view/figure.png``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from monai_gnerf.apps.generative import example_single_view
from monai_gnerf.apps.sparse_view import DemoConfig, sparse_view_demo
from monai_gnerf.config import Config, NonNegativeFloat
from monai_gnerf.io import check_output, removed_on_failure

__all__ = ["DEMO_OUTPUTS", "MainDemoConfig", "demo"]

DEMO_OUTPUTS = ("metrics.json", "figure.png", "truth.nii.gz", "fdk.nii.gz", "grid.nii.gz", "projections", "single_view")
"""What :func:`demo` writes into its folder."""


@dataclass
class MainDemoConfig(Config):
    """Options of :func:`demo`.

    Args:
        sparse_view: the sparse-view half.
        single_view_budget_s: wall time of the single-view fit with the shipped prior, seconds
            (0 skips the single-view half).
    """

    sparse_view: DemoConfig = field(default_factory=DemoConfig)
    single_view_budget_s: NonNegativeFloat = 40.0


def demo(
    out: str | Path = "outputs/demo",
    config: MainDemoConfig | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """The main job: sparse-view and single-view reconstruction of the embedded example chest CT.

    Sparse view (OUT/): VIEWS simulated cone-beam X-rays, FDK and the masked grid field,
    truth/fdk/grid NIfTI volumes (HU), figure.png, metrics.json, the projections. Single view
    (OUT/single_view/): the CT's PA DRR through the shipped generative prior (never trained on
    this CT), 72 views, volume.nii.gz (HU), figure.png, against the copy-the-input baseline.

    Args:
        out: output folder.
        config: demo options.
        device: 'cpu', 'cuda' or 'cuda:N'.
        overwrite: replace the outputs of an earlier demo in OUT.

    A demo that fails (or is interrupted) removes OUT again when it made it.
    """
    config = config or MainDemoConfig()
    check_output(out, "dir", overwrite, DEMO_OUTPUTS)
    with removed_on_failure(out):
        summary = sparse_view_demo(out, config.sparse_view, device)
        if config.single_view_budget_s > 0:
            summary["single_view"] = example_single_view(Path(out) / "single_view", config.single_view_budget_s, device)
    return summary
