"""Quick-look figures: the single-view fit panel, the loss curve, the figure beside a volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monai_gnerf.apps.figures import figure_path, fit_figure, loss_curve


def test_figure_path_sits_beside_the_volume():
    assert figure_path("out/recon.nii.gz") == Path("out/recon.png")
    assert figure_path("volume.nrrd") == Path("volume.png")


def test_fit_figure_shows_no_difference_for_a_perfect_fit(tmp_path):
    view = torch.zeros(32, 32)
    view[8:24, 10:22] = 2.0
    path = fit_figure(tmp_path / "fit.png", view, view.clone(), [1.0, 0.5, 0.25], tile=64)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (2 * 14 + 2 * 64, 3 * 64)
    tiles = [sheet[14 : 14 + 64, c * 64 : (c + 1) * 64] for c in range(3)]
    assert tiles[0].max() == 255 and np.array_equal(tiles[0], tiles[1])  # input and fit drawn alike
    assert tiles[2].max() == 0  # |fitted - input| is black


def test_loss_curve_falls_from_left_to_right():
    curve = np.asarray(loss_curve([10.0, 3.0, 1.0, 0.3, 0.1], width=200, height=80))
    lit = np.argwhere(curve[:, :] == 255)
    first, last = lit[lit[:, 1].argmin()], lit[lit[:, 1].argmax()]
    assert first[0] < 20 and last[0] > 60  # the highest loss at the top left, the lowest at the bottom right
