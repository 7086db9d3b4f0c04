"""RTK, the classical CPU reconstruction toolkit, as a peer: our geometry and volumes in its terms.

The peer is RTK 2.7 through its Python wheel (``pip install itk-rtk==2.7.0.post1``, Apache 2.0,
https://github.com/RTKConsortium/RTK; part of the project's ``[test]`` extra, never of the
package). This module only calls RTK's public filters.

Frames. Our world is RAS in mm with the orbit about +z, view 0 posterior-anterior (source
posterior, along -y). RTK's circular geometry rotates about its own +y axis with the source on
+z at gantry angle 0 and the detector's u axis along +x. Mapping points with
``p_rtk = M (p_ras - isocenter)``, ``M = [[-1, 0, 0], [0, 0, -1], [0, -1, 0]]`` (a rotation:
det M = +1), puts our source direction -y on RTK's +z and our +z axis on RTK's -y; our angle
theta is then RTK's gantry angle ``-theta``. Our detector rows run superior to inferior (RTK +v
is our -z, row 0 superior) and our columns towards the patient's right (RTK +u is our -x), so a
projection stack is our ``[view, row, col]`` array unchanged, as an ITK image of size
(cols, rows, views) centred on the detector. Volumes keep their own affine: the ITK image's
direction and origin are ``M`` applied to the affine, so no voxel is resampled.

``tests/render/test_rtk_peer.py`` checks the mapping: RTK's Joseph projection of a CT equals ours
(NCC >= 0.999 on every view) and RTK's FDK is within 1 dB of ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from monai_gnerf.geometry import ProjectionGeometry

RAS_TO_RTK = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
RTK_VERSION = "itk-rtk 2.7.0.post1"


def _rtk():
    import itk
    from itk import RTK

    return itk, RTK


def available() -> bool:
    """Whether itk-rtk is installed (it adds ``RTK`` to itk's lazily loaded modules)."""
    try:
        import itk
    except ImportError:
        return False
    return hasattr(itk, "RTK")


def set_threads(threads: int) -> None:
    """ITK's global worker count (RTK's filters use ITK's thread pool)."""
    itk, _ = _rtk()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(threads))


def rtk_geometry(geometry: ProjectionGeometry):
    """An ``rtk.ThreeDCircularProjectionGeometry`` equal to a circular cone-beam geometry of ours."""
    _, rtk = _rtk()
    if geometry.beam != "cone" or geometry.tilt_deg is not None or tuple(geometry.rotation_axis) != (0.0, 0.0, 1.0):
        raise ValueError("the RTK mapping covers circular cone-beam orbits about +z without tilt")
    if tuple(geometry.source_direction) != (0.0, -1.0, 0.0):
        raise ValueError("the RTK mapping expects view 0 posterior-anterior (source direction -y)")
    if any(geometry.detector_offset_mm):
        raise ValueError("the RTK mapping covers centred detectors (detector_offset_mm = 0)")
    rtk_geom = rtk.ThreeDCircularProjectionGeometry.New()
    for angle in geometry.angles_deg:
        rtk_geom.AddProjection(
            float(geometry.source_to_isocenter_mm), float(geometry.source_to_detector_mm),
            float((-angle) % 360.0),
        )  # fmt: skip
    return rtk_geom


def _isocenter(geometry: ProjectionGeometry) -> np.ndarray:
    if geometry.isocenter_mm is None:
        raise ValueError("resolve the geometry's isocenter first (ProjectionGeometry.resolved)")
    return np.asarray(geometry.isocenter_mm, dtype=np.float64)


def volume_frame(affine: torch.Tensor, geometry: ProjectionGeometry) -> dict[str, np.ndarray]:
    """Spacing, origin and direction in RTK's frame of a volume whose voxel (i, j, k) is at ``affine``."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return {
        "spacing": spacing,
        "origin": RAS_TO_RTK @ (np.asarray(affine, dtype=np.float64)[:3, 3] - _isocenter(geometry)),
        "direction": RAS_TO_RTK @ linear / spacing,
    }


def _with_frame(image, frame: dict[str, np.ndarray]):
    itk, _ = _rtk()
    image.SetSpacing(frame["spacing"].tolist())
    image.SetOrigin(frame["origin"].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(frame["direction"])))
    return image


def volume_to_itk(volume: torch.Tensor, affine: torch.Tensor, geometry: ProjectionGeometry):
    """Our (i, j, k) volume as an ITK float image placed in RTK's frame (ITK arrays are z, y, x)."""
    itk, _ = _rtk()
    array = np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0))
    return _with_frame(itk.image_from_array(array), volume_frame(affine, geometry))


def volume_from_itk(image) -> torch.Tensor:
    """An ITK volume made by :func:`volume_to_itk` (or on its frame) back as our (i, j, k) tensor."""
    itk, _ = _rtk()
    return torch.from_numpy(np.ascontiguousarray(itk.array_from_image(image).transpose(2, 1, 0)))


def empty_volume(shape: tuple[int, int, int], affine: torch.Tensor, geometry: ProjectionGeometry):
    """A zero volume on our grid, in RTK's frame."""
    return volume_to_itk(torch.zeros(shape), affine, geometry)


def projections_to_itk(projections: torch.Tensor, geometry: ProjectionGeometry):
    """Our ``(views, rows, cols)`` line integrals as RTK's projection stack (cols, rows, views)."""
    itk, _ = _rtk()
    rows, cols = geometry.detector_shape
    spacing_row_mm, spacing_col_mm = geometry.pixel_spacing_mm
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(projections, dtype=np.float32)))
    frame = {
        "spacing": np.array([spacing_col_mm, spacing_row_mm, 1.0]),
        "origin": np.array([-(cols - 1) / 2 * spacing_col_mm, -(rows - 1) / 2 * spacing_row_mm, 0.0]),
        "direction": np.eye(3),
    }
    return _with_frame(image, frame)


def joseph_projector(volume: torch.Tensor, affine: torch.Tensor, geometry: ProjectionGeometry):
    """RTK's Joseph forward projector of our volume, set up and not yet run (``Update()`` runs it)."""
    itk, rtk = _rtk()
    image_type = itk.Image[itk.F, 3]
    projector = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
    projector.SetInput(0, projections_to_itk(torch.zeros((geometry.num_views, *geometry.detector_shape)), geometry))
    projector.SetInput(1, volume_to_itk(volume, affine, geometry))
    projector.SetGeometry(rtk_geometry(geometry))
    return projector


def joseph_projections(volume: torch.Tensor, affine: torch.Tensor, geometry: ProjectionGeometry) -> torch.Tensor:
    """RTK's Joseph forward projection of our volume, as our ``(views, rows, cols)`` tensor."""
    itk, _ = _rtk()
    projector = joseph_projector(volume, affine, geometry)
    projector.Update()
    return torch.from_numpy(itk.array_from_image(projector.GetOutput()).copy())


@dataclass
class RTKMethod:
    """One RTK reconstruction method with its settings.

    Attributes:
        name: 'fdk', 'os-sart', 'admm-tv' or 'cg'.
        settings: the filter's options (``Lambda``, ``Alpha``, ...: RTK's own setter names).
        iterations: outer iterations; ``None`` = as many as fit in the wall-time budget.
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    iterations: int | None = None

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        return f"RTK {self.name.upper()}" + (f" ({shown})" if shown else "")


_WARM: set[str] = set()  # methods whose ITK wrapping this process has loaded
_ITERATION_SETTER = {"os-sart": "SetNumberOfIterations", "admm-tv": "SetAL_iterations", "cg": "SetNumberOfIterations"}


def _filter(method: RTKMethod, geometry: ProjectionGeometry, volume, projections, iterations: int):
    itk, rtk = _rtk()
    image_type = itk.Image[itk.F, 3]
    views = geometry.num_views
    if method.name == "fdk":
        recon = rtk.FDKConeBeamReconstructionFilter[image_type].New()
    elif method.name == "os-sart":
        recon = rtk.SARTConeBeamReconstructionFilter[image_type, image_type].New()
    elif method.name == "admm-tv":
        recon = rtk.ADMMTotalVariationConeBeamReconstructionFilter[image_type].New()
        recon.SetGatingWeights([1.0] * views)  # RTK's Python wrapping needs the weights to run at all
    elif method.name == "cg":
        recon = rtk.ConjugateGradientConeBeamReconstructionFilter[image_type].New()
        weights = projections_to_itk(torch.ones((views, *geometry.detector_shape)), geometry)
        recon.SetInputWeights(weights)
    else:
        raise ValueError(f"unknown RTK method {method.name!r}")
    if method.name != "fdk":
        recon.SetForwardProjectionFilter(recon.ForwardProjectionType_FP_JOSEPH)
        recon.SetBackProjectionFilter(recon.BackProjectionType_BP_JOSEPH)
        getattr(recon, _ITERATION_SETTER[method.name])(int(iterations))
    for name, value in method.settings.items():
        getattr(recon, f"Set{name}")(value)
    recon.SetInput(0, volume)
    recon.SetInput(1, projections)
    recon.SetGeometry(rtk_geometry(geometry))
    return recon


def _run(method, geometry, shape, affine, projections, iterations) -> tuple[torch.Tensor, float]:
    # fresh ITK inputs for every run: a filter's update leaves its inputs' regions unusable by the next one
    volume = empty_volume(shape, affine, geometry)
    stack = projections_to_itk(projections, geometry)
    start = time.perf_counter()
    recon = _filter(method, geometry, volume, stack, iterations)
    recon.Update()
    seconds = time.perf_counter() - start
    return volume_from_itk(recon.GetOutput()), seconds


def rtk_reconstruct(
    method: RTKMethod,
    projections: torch.Tensor,
    geometry: ProjectionGeometry,
    shape: tuple[int, int, int],
    affine: torch.Tensor,
    budget_s: float,
) -> tuple[torch.Tensor, float, int]:
    """Reconstruct with RTK on our grid within ``budget_s`` seconds of its own compute.

    RTK's iterative filters take an iteration count, not a time: runs of one and two iterations
    are timed first (set-up and time per iteration) and the run then makes as many as fit in the
    budget (at least one). A method's first use in the process is a warm-up, not timed.

    Returns:
        the volume (1/mm, our (i, j, k) order on ``affine``), the seconds of the final run and
        its iterations (0 for FDK).
    """
    if method.name not in _WARM:  # ITK loads a filter's wrapping on its first use: not RTK's compute
        _run(method, geometry, shape, affine, projections, 1)
        _WARM.add(method.name)
    if method.name == "fdk":
        volume, seconds = _run(method, geometry, shape, affine, projections, 0)
        return volume, seconds, 0
    iterations = method.iterations
    if iterations is None:
        _, one = _run(method, geometry, shape, affine, projections, 1)
        _, two = _run(method, geometry, shape, affine, projections, 2)
        per_iteration = max(two - one, 0.05 * one)
        iterations = max(1, int((budget_s - max(one - per_iteration, 0.0)) // per_iteration))
    volume, seconds = _run(method, geometry, shape, affine, projections, iterations)
    return volume, seconds, iterations
