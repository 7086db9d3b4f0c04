"""Draw PA and lateral DRRs of training populations as one PNG (the README's sample grid).

Rows: procedural chests, procedural knees, varied copies of the embedded example CT; columns:
subjects, PA above lateral. Exact closed-form projections for the phantoms, Joseph DRRs for the
CT population, on the MedNeRF chest (knee) orbit at 128x128 pixels.

    python scripts/population_samples.py [--out benchmarks/results/population_samples.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from monai_gnerf.data import CTPopulation, PhantomPopulation, PhantomViewDataset
from monai_gnerf.geometry import load_geometry

TILE, SUBJECTS = 128, 6


def population_rows() -> list[tuple[str, torch.Tensor]]:
    """``(label, views (subjects, 2, H, W))`` per population: PA and lateral views."""
    chest = load_geometry("mednerf_chest").with_detector_shape(TILE, TILE).with_uniform_angles(4)
    knee = load_geometry("mednerf_knee").with_detector_shape(TILE, TILE).with_uniform_angles(4)
    rows = []
    for label, population, geometry in (
        ("procedural chest", PhantomPopulation("chest", seed=0), chest),
        ("procedural knee", PhantomPopulation("knee", seed=0), knee),
        ("varied example CT", CTPopulation(("example",), seed=0), chest),
    ):
        dataset = PhantomViewDataset(population, geometry, range(SUBJECTS))
        rows.append((label, torch.stack([dataset.views(i)[:2] for i in range(SUBJECTS)])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/population_samples.png"))
    args = parser.parse_args()
    rows = population_rows()
    label = 14
    sheet = Image.new("L", (TILE * SUBJECTS, (2 * TILE + label) * len(rows)), 0)
    draw = ImageDraw.Draw(sheet)
    for r, (name, views) in enumerate(rows):
        y = r * (2 * TILE + label)
        draw.text((2, y + 1), f"{name}: PA above lateral", fill=255)
        high = float(views.max())
        for s in range(SUBJECTS):
            for k in range(2):
                array = np.clip(views[s, k].numpy() / high, 0.0, 1.0)
                sheet.paste(Image.fromarray((array * 255).astype(np.uint8)), (s * TILE, y + label + k * TILE))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
