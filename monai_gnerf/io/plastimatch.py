"""Interoperability with Plastimatch's ``drr`` command (the DRR tool MedNeRF's data came from).

Plastimatch is an optional peer (``pip install plastimatch==1.10.0``), never a dependency.
Conventions, measured against our renderer on the example chest CT (NCC >= 0.99 per view):

* Plastimatch reads volumes through ITK in LPS and renders empty images when the direction
  cosines are not the identity; :func:`write_identity_lps_volume` resamples (by axis flips only,
  no interpolation) to identity directions first.
* Its isocenter (``-o``) is in LPS mm: ``(-x, -y, z)`` of our RAS isocenter.
* Its gantry angle ``phi`` (about the superior axis, default ``vup = 0 0 1``) corresponds to our
  orbit angle ``270 - phi`` degrees: its angle 0 is a lateral view, and it turns the other way.
* Its images are mirrored left-right relative to ours (columns run the opposite way); rows agree
  (superior at the top).
* Its output intensities are line integrals in its own attenuation units, so compare by
  normalized cross-correlation, not absolute values.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry

__all__ = [
    "PLASTIMATCH_ANGLE_OFFSET_DEG",
    "write_identity_lps_volume",
    "plastimatch_drr_command",
    "read_pfm",
    "run_plastimatch_drr",
    "ours_from_plastimatch_angles",
]

PLASTIMATCH_ANGLE_OFFSET_DEG = 270.0
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_identity_lps_volume(volume: torch.Tensor, affine: torch.Tensor, path: Path) -> None:
    """Write an axis-aligned volume (float32) as MHA/NRRD with identity LPS direction cosines (axis flips only)."""
    import itk  # local import: only this interop path needs ITK's writer

    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    linear = lps[:3, :3]
    if np.count_nonzero(np.abs(linear) > 1e-6 * np.abs(linear).max()) != 3:
        raise GnerfInputError("Plastimatch export needs an axis-aligned volume (a permuted/flipped diagonal affine).")
    array = np.asarray(volume, dtype=np.float32)
    order = [int(np.argmax(np.abs(linear[:, j]))) for j in range(3)]  # world axis of each array axis
    array = np.transpose(array, np.argsort(order))  # array axes now follow world x, y, z
    linear = linear[:, np.argsort(order)]
    corner_index = np.zeros(3)
    for axis in range(3):
        if linear[axis, axis] < 0:
            array = np.flip(array, axis)
            corner_index[axis] = array.shape[axis] - 1
    origin = linear @ corner_index + lps[:3, 3]
    image = itk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(np.float32))
    image.SetSpacing([float(abs(linear[a, a])) for a in range(3)])
    image.SetOrigin(origin.tolist())
    itk.imwrite(image, str(path))


def plastimatch_drr_command(
    geometry: ProjectionGeometry,
    volume_path: Path,
    out_prefix: str,
    algorithm: str = "exact",
    hu_conversion: str = "preprocess",
) -> list[str]:
    """The ``plastimatch drr`` call that renders ``geometry``'s detector at Plastimatch angles 0, N, 2N, ...

    The geometry must be a resolved cone beam with uniformly spaced angles; the Plastimatch views
    correspond to our angles given by :func:`ours_from_plastimatch_angles`. ``hu_conversion`` is
    Plastimatch's ``-P`` option: ``"preprocess"`` for HU input, ``"none"`` when the volume already
    holds attenuation in 1/mm (its output is then our line integral).
    """
    if geometry.beam != "cone" or geometry.isocenter_mm is None:
        raise GnerfInputError("Plastimatch comparison needs a resolved cone-beam geometry.")
    angles = np.asarray(geometry.angles_deg)
    steps = np.diff(angles) if len(angles) > 1 else np.array([0.0])
    if not np.allclose(steps, steps[0]):
        raise GnerfInputError("Plastimatch renders uniformly spaced angles only.")
    rows, cols = geometry.detector_shape
    x, y, z = geometry.isocenter_mm
    return [
        "plastimatch", "drr", "-A", "cpu", "-i", algorithm,
        "-P", hu_conversion, "-N", f"{abs(steps[0]):g}", "-a", str(geometry.num_views),
        "-r", f"{rows} {cols}",
        "-z", f"{rows * geometry.pixel_spacing_mm[0]:g} {cols * geometry.pixel_spacing_mm[1]:g}",
        "--sad", f"{geometry.source_to_isocenter_mm:g}", "--sid", f"{geometry.source_to_detector_mm:g}",
        "-o", f"{-x:.6f} {-y:.6f} {z:.6f}",
        "-t", "pfm", "-O", out_prefix, str(volume_path),
    ]  # fmt: skip


def ours_from_plastimatch_angles(plastimatch_angles_deg: Sequence[float]) -> list[float]:
    """Our orbit angles (degrees, in [0, 360)) of Plastimatch gantry angles."""
    return [(PLASTIMATCH_ANGLE_OFFSET_DEG - a) % 360.0 for a in plastimatch_angles_deg]


def read_pfm(path: Path) -> np.ndarray:
    """Read a grayscale PFM image (Plastimatch's float output), rows top to bottom as written."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"Pf":
            raise GnerfInputError(f"{path} is not a grayscale PFM file.")
        width, height = (int(v) for v in handle.readline().split())
        scale = float(handle.readline())
        data = np.fromfile(handle, dtype="<f4" if scale < 0 else ">f4", count=width * height)
    return data.reshape(height, width)


def run_plastimatch_drr(
    volume: torch.Tensor,
    affine: torch.Tensor,
    geometry: ProjectionGeometry,
    work_dir: Path,
    algorithm: str = "exact",
    hu_conversion: str = "preprocess",
) -> np.ndarray:
    """Render with Plastimatch and return its views mapped to our conventions ``(views, rows, cols)``.

    View ``k`` of the result corresponds to our angle ``ours_from_plastimatch_angles`` of
    Plastimatch's ``k``-th gantry angle, and is mirrored to our column direction.
    """
    if shutil.which("plastimatch") is None:
        raise GnerfInputError("plastimatch is not installed (pip install plastimatch==1.10.0).")
    work_dir.mkdir(parents=True, exist_ok=True)
    volume_path = work_dir / "volume_lps.mha"
    write_identity_lps_volume(volume, affine, volume_path)
    command = plastimatch_drr_command(geometry, volume_path, str(work_dir / "drr_"), algorithm, hu_conversion)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise GnerfInputError(f"plastimatch failed: {done.stderr.strip() or done.stdout.strip()}")
    views = sorted(work_dir.glob("drr_*.pfm"))
    return np.stack([read_pfm(p)[:, ::-1] for p in views])
