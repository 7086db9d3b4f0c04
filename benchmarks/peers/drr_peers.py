"""Time DRR rendering with a peer renderer, DiffDRR or nanodrr, on the ``mednerf_chest`` orbit.

The peers measured here are DiffDRR 0.6.1 (https://github.com/eigenvivek/DiffDRR) and its
successor nanodrr 0.1.7 (https://github.com/eigenvivek/nanodrr), both MIT licence, Vivek
Gopalakrishnan et al.; this script only calls their public APIs, on their CPU (PyTorch) paths.
Install them apart from the project, without letting pip replace torch:

    pip install --no-deps -r benchmarks/peers/requirements-drr-peers.txt

Geometry (``configs/geometry/mednerf_chest.json``): circular orbit about the patient's superior
axis through the volume centre, 5-degree steps, view 0 posterior-anterior (source posterior),
source-to-isocenter 541 mm, source-to-detector 949 mm, 500 x 500 mm detector, row 0 superior,
column 0 towards the patient's right.

- DiffDRR: ``read(..., orientation="PA")`` (camera z -> anterior, camera y -> superior; the x-axis
  reflection this implies is undone by ``reverse_x_axis=True``) and, per view, Euler angles
  ``(angle, 0, 0)`` with ``convention="ZXY"`` and translation ``(0, -541, 0)``, which DiffDRR turns
  into a source at ``Rz(angle) @ (0, -541, 0)`` in the volume-centred RAS frame.
- nanodrr: a pinhole camera whose x, y and z axes are our detector's column direction ``u``, row
  direction ``v`` and central ray ``n``, placed at our source: its camera-to-world matrices are
  built from :meth:`ProjectionGeometry.frames`, so the two renderers trace the same rays.

Only the rendering loop is timed (``time.perf_counter``); loading, HU-to-attenuation conversion
and module setup are not, nor is one untimed warm-up call (``--warmup 0`` to skip it). Views are
rendered in batches, and large detectors in DiffDRR patches, so that one call traces at most
``RAYS_PER_CALL`` rays (about 1 GB of temporaries). ``peak_rss_mb`` is the whole process's peak;
``render_peak_rss_mb`` is the rendering phase's own (Linux: the high-water mark is reset through
``/proc/self/clear_refs`` after setup).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from monai_gnerf.geometry import load_geometry, volume_center_mm
from monai_gnerf.io import load_ct

PRESET = load_geometry("mednerf_chest")  # the geometry is data: distances come from the preset
SOURCE_TO_ISOCENTER_MM = float(PRESET.source_to_isocenter_mm)
SOURCE_TO_DETECTOR_MM = float(PRESET.source_to_detector_mm)
DETECTOR_MM = PRESET.detector_shape[1] * PRESET.pixel_spacing_mm[1]
RAYS_PER_CALL = {"siddon": 128 * 128, "trilinear": 4 * 128 * 128}

Renderer = Callable[[int, int], torch.Tensor]  # (first view, end view) -> (views, rows, cols)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=("diffdrr", "nanodrr"), required=True)
    p.add_argument("--ct", type=Path, required=True, help="CT volume in HU (NIfTI)")
    p.add_argument("--size", type=int, default=128, help="detector pixels per side")
    p.add_argument("--views", type=int, default=72, help="number of views at 5-degree steps")
    p.add_argument("--renderer", choices=("trilinear", "siddon"), default="trilinear", help="DiffDRR's renderer")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--n-points", type=int, default=500, help="trilinear samples per ray (both peers' default)")
    p.add_argument("--mu-water", type=float, default=None,
                   help="nanodrr: attenuation of water (1/mm), with bone made linear in HU (geometry checks)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--save-npy", type=Path, default=None, help="save (views, H, W) float32")
    return p.parse_args(argv)


def diffdrr_renderer(args: argparse.Namespace) -> tuple[Renderer, int, str]:
    """DiffDRR's ``DRR`` module on the preset orbit; returns the renderer, its batch and version."""
    import diffdrr
    from diffdrr.data import read
    from diffdrr.drr import DRR

    rays = RAYS_PER_CALL[args.renderer]
    pixels = args.size * args.size
    drr = DRR(
        read(str(args.ct), orientation="PA"),
        sdd=SOURCE_TO_DETECTOR_MM,
        height=args.size,
        delx=DETECTOR_MM / args.size,
        renderer=args.renderer,
        reverse_x_axis=True,
        patch_size=None if pixels <= rays else int(rays**0.5),
    ).eval()
    angles = torch.deg2rad(torch.tensor(PRESET.angles_deg[: args.views], dtype=torch.float32))
    zeros = torch.zeros_like(angles)
    rotations = torch.stack([angles, zeros, zeros], dim=1)
    translations = torch.stack([zeros, zeros - SOURCE_TO_ISOCENTER_MM, zeros], dim=1)
    extra = {"n_points": args.n_points} if args.renderer == "trilinear" else {}

    def render(lo: int, hi: int) -> torch.Tensor:
        pose = (rotations[lo:hi], translations[lo:hi])
        return drr(*pose, parameterization="euler_angles", convention="ZXY", **extra)[:, 0]

    return render, max(1, rays // pixels), diffdrr.__version__


def camera_to_world(geometry) -> torch.Tensor:
    """``(views, 4, 4)`` pinhole camera-to-world matrices: axes u, v, n at the source (world mm)."""
    frames = geometry.frames(torch.tensor(geometry.angles_deg, dtype=torch.float64))
    matrices = torch.zeros(geometry.num_views, 4, 4, dtype=torch.float64)
    matrices[:, :3, 0], matrices[:, :3, 1], matrices[:, :3, 2] = frames.u, frames.v, frames.n
    matrices[:, :3, 3] = frames.source_mm
    matrices[:, 3, 3] = 1.0
    return matrices.float()


def nanodrr_renderer(args: argparse.Namespace) -> tuple[Renderer, int, str]:
    """nanodrr's ``DRR`` (PyTorch backend) on the preset orbit, cameras from our geometry."""
    from importlib.metadata import version

    from nanodrr.data import Subject
    from nanodrr.drr import DRR

    mu = {} if args.mu_water is None else {"mu_water": args.mu_water, "mu_bone": 2 * args.mu_water, "hu_bone": 1000.0}
    subject = Subject.from_filepath(args.ct, **mu)
    ct = load_ct(args.ct)
    geometry = PRESET.subset(range(args.views)).resolved(volume_center_mm(ct.affine, ct.shape).tolist())
    del ct
    pitch_mm = DETECTOR_MM / args.size
    drr = DRR.from_carm_intrinsics(SOURCE_TO_DETECTOR_MM, pitch_mm, pitch_mm, 0.0, 0.0, args.size, args.size)
    cameras = camera_to_world(geometry)

    def render(lo: int, hi: int) -> torch.Tensor:
        return drr(subject, cameras[lo:hi], n_samples=args.n_points, backend="torch")[:, 0]

    return render, max(1, RAYS_PER_CALL["trilinear"] // (args.size * args.size)), version("nanodrr")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    render, batch, tool_version = (diffdrr_renderer if args.tool == "diffdrr" else nanodrr_renderer)(args)

    images = torch.empty(args.views, args.size, args.size)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    with torch.no_grad():
        for _ in range(args.warmup):
            render(0, min(batch, args.views))
        start = time.perf_counter()
        for lo in range(0, args.views, batch):
            hi = min(lo + batch, args.views)
            images[lo:hi] = render(lo, hi)
        seconds = time.perf_counter() - start

    if not bool(torch.isfinite(images).all()):
        raise SystemExit(f"{args.tool} produced non-finite pixels")
    result = {
        "tool": args.tool,
        "version": tool_version,
        "renderer": args.renderer if args.tool == "diffdrr" else "trilinear",
        "n_points": args.n_points if args.tool == "nanodrr" or args.renderer == "trilinear" else None,
        "size": args.size,
        "views": args.views,
        "threads": args.threads,
        "batch": batch,
        "warmup": args.warmup,
        "seconds": seconds,
        "seconds_per_view": seconds / args.views,
        "peak_rss_mb": max(setup_peak, peak_rss_mb()),
        "render_peak_rss_mb": peak_rss_mb() if reset else None,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.save_npy is not None:
        np.save(args.save_npy, images.numpy().astype(np.float32))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
