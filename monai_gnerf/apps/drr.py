"""The DRR job: a CT in HU -> a projection folder (``monai-gnerf drr``, ``bundle/configs/drr.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pydicom
import torch

from monai_gnerf.apps.common import check_device
from monai_gnerf.config import Config, PositiveFloat, PositiveInt
from monai_gnerf.data import resolve_ct_path
from monai_gnerf.geometry import (
    ProjectionGeometry,
    check_source_outside,
    check_volume_in_beam,
    load_geometry,
    volume_center_mm,
)
from monai_gnerf.io import (
    PROJECTION_FOLDER_CONTENTS,
    check_output,
    dicom_identifiers,
    dicom_series_files,
    load_ct,
    projection_folder_bytes,
    save_projections,
)
from monai_gnerf.resources import check_memory
from monai_gnerf.physics import MU_WATER_PER_MM, PhotonsPerPixel, WaterAttenuationPerMm, add_detector_noise
from monai_gnerf.render import RenderMethod
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation

__all__ = ["DRRConfig", "check_drr_memory", "simulate_drrs"]

_DRR_COPIES = 3  # attenuation copy, rays and output of the renderer, float32 each


@dataclass
class DRRConfig(Config):
    """Options of :func:`simulate_drrs`.

    Args:
        geometry: preset name (see `monai-gnerf presets`), a geometry JSON file, or a geometry.
        views: if set, replace the geometry's angles by this many views evenly over 360 degrees.
        method: 'joseph' (fast), 'trilinear' (ray marching, see step_mm) or 'siddon' (exact voxel lengths).
        step_mm: ray-marching step in mm for 'trilinear', 0.01 to 1 times the smallest voxel spacing (default: half of it).
        mu_water_per_mm: attenuation of water in 1/mm used for HU -> attenuation (0.001 to 1: photon
            energies from about 10 MeV down to 10 keV).
        noise_i0: if set, add Poisson noise with this many photons per pixel (100 to 1e9) plus electronic noise.
        seed: random seed for the noise.
    """

    geometry: str | ProjectionGeometry = "mednerf_chest"
    views: PositiveInt | None = None
    method: RenderMethod = "joseph"
    step_mm: PositiveFloat | None = None
    mu_water_per_mm: WaterAttenuationPerMm = MU_WATER_PER_MM
    noise_i0: PhotonsPerPixel | None = None
    seed: int = 0


def check_drr_memory(geo: ProjectionGeometry, volume: torch.Tensor) -> None:
    """Refuse DRRs of a CT that would not fit in memory (one line naming their sizes)."""
    check_memory(_DRR_COPIES * 4 * (volume.numel() + geo.num_views * math.prod(geo.detector_shape)),
                 f"{geo.num_views} views of {geo.detector_shape[0]}x{geo.detector_shape[1]} pixels of a "
                 f"{'x'.join(map(str, volume.shape))} CT")  # fmt: skip


def simulate_drrs(
    ct: str | Path,
    out: str | Path = "drr_out",
    config: DRRConfig | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
) -> Path:
    """Simulate X-rays (DRRs) of a CT and write them with their geometry.

    Writes OUT/projections.nii.gz (float line integrals), OUT/png/view_NNN.png (16-bit),
    OUT/geometry.json (with the isocenter resolved to the CT centre) and OUT/projections.json
    (see :mod:`monai_gnerf.io.projections`).

    Args:
        ct: CT volume in HU: NIfTI, NRRD or MHA file, a folder with one DICOM series, or
            'example' for the embedded example chest CT.
        out: output folder.
        config: DRR options.
        device: 'cpu', 'cuda' or 'cuda:N'.
        overwrite: replace the projections of an earlier run in OUT.

    Returns:
        The output folder.
    """
    config = config or DRRConfig()
    device = check_device(device)
    geo = load_geometry(config.geometry)
    ct_path = resolve_ct_path(ct)
    views = geo.num_views if config.views is None else config.views
    check_output(out, "dir", overwrite, PROJECTION_FOLDER_CONTENTS, projection_folder_bytes(views, geo.detector_shape),
                 inputs=[ct_path])  # fmt: skip
    if config.views is not None:
        geo = geo.with_uniform_angles(config.views)
    volume = load_ct(ct_path)
    check_drr_memory(geo, volume)
    resolved = geo.resolved(volume_center_mm(volume.affine, volume.shape).tolist())
    check_source_outside(resolved, volume.shape, volume.affine)
    check_volume_in_beam(resolved, volume.shape, volume.affine)
    volume = volume.to(device)
    with torch.no_grad():
        renderer = GenerateDRR(geo, method=config.method, step_mm=config.step_mm, progress=True)
        drr = renderer(HUToAttenuation(config.mu_water_per_mm)(volume))
    if config.noise_i0 is not None:
        noise = torch.Generator(drr.device).manual_seed(config.seed)
        drr = add_detector_noise(drr, i0_photons=config.noise_i0, generator=noise)
    resolved = load_geometry(drr.meta["geometry"])
    extra = {
        "source": str(ct_path.resolve()),
        "method": config.method,
        "mu_water_per_mm": config.mu_water_per_mm,
        "noise_i0": config.noise_i0,
        "volume_affine": volume.affine.tolist(),
        "volume_shape": list(volume.shape),
    }
    if ct_path.is_dir():  # a DICOM series: a reconstruction can join its study (reconstruct --dicom_dir)
        extra["source_dicom"] = dicom_identifiers(pydicom.dcmread(dicom_series_files(ct_path)[0], stop_before_pixels=True))
    return save_projections(out, drr, resolved, extra)
