"""The DRR job: a CT in HU -> a projection folder (``monai-gnerf drr``, ``bundle/configs/drr.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from monai_gnerf.apps.common import check_device
from monai_gnerf.config import Config
from monai_gnerf.data import resolve_ct_path
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io import load_ct, save_projections
from monai_gnerf.physics import MU_WATER_PER_MM, add_detector_noise
from monai_gnerf.render import RenderMethod
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation

__all__ = ["DRRConfig", "simulate_drrs"]


@dataclass
class DRRConfig(Config):
    """Options of :func:`simulate_drrs`.

    Args:
        geometry: preset name (see `monai-gnerf presets`), a geometry JSON file, or a geometry.
        views: if set, replace the geometry's angles by this many views evenly over 360 degrees.
        method: 'joseph' (fast), 'trilinear' (ray marching, see step_mm) or 'siddon' (exact voxel lengths).
        step_mm: ray-marching step in mm for 'trilinear' (default: half the smallest voxel spacing).
        mu_water_per_mm: attenuation of water in 1/mm used for HU -> attenuation.
        noise_i0: if set, add Poisson noise with this many photons per pixel plus electronic noise.
        seed: random seed for the noise.
    """

    geometry: str | ProjectionGeometry = "mednerf_chest"
    views: int | None = None
    method: RenderMethod = "joseph"
    step_mm: float | None = None
    mu_water_per_mm: float = MU_WATER_PER_MM
    noise_i0: float | None = None
    seed: int = 0


def simulate_drrs(
    ct: str | Path, out: str | Path = "drr_out", config: DRRConfig | None = None, device: str | torch.device = "cpu"
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

    Returns:
        The output folder.
    """
    config = config or DRRConfig()
    device = check_device(device)
    geo = load_geometry(config.geometry)
    if config.views is not None:
        geo = geo.with_uniform_angles(config.views)
    ct_path = resolve_ct_path(ct)
    volume = load_ct(ct_path).to(device)
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
    return save_projections(out, drr, resolved, extra)
