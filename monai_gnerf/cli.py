"""The ``monai-gnerf`` command line (python-fire).

Run ``monai-gnerf --help`` or ``monai-gnerf COMMAND --help`` for the options of each command.
User errors (missing files, bad geometry, invalid volumes) print one line and exit with status 2;
Ctrl-C exits with status 130 and leaves no partial output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire
import torch

from monai_gnerf.data import example_ct_path
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import list_presets, load_geometry
from monai_gnerf.io import load_ct
from monai_gnerf.physics import MU_WATER_PER_MM, add_detector_noise
from monai_gnerf.projections import save_projections
from monai_gnerf.transforms import GenerateDRR, HUToAttenuation

__all__ = ["Commands", "main"]


def _ct_path(ct: str) -> Path:
    """The CT path, with ``example`` standing for the embedded example chest CT."""
    return example_ct_path() if ct == "example" else Path(ct)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GnerfInputError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GnerfInputError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu.")
    return device


class Commands:
    """monai-gnerf: X-ray simulation and reconstruction with neural radiance fields."""

    def presets(self) -> None:
        """List the geometry presets (usable wherever a --geometry is asked for)."""
        for name in list_presets():
            geometry = load_geometry(name)
            print(f"{name:16s} {geometry.description}")

    def geometry(self, name: str) -> None:
        """Print a geometry preset (or a geometry JSON file) as JSON, ready to edit and pass back.

        Args:
            name: preset name (see `monai-gnerf presets`) or path of a geometry JSON file.
        """
        print(load_geometry(name).to_json())

    def drr(
        self,
        ct: str,
        geometry: str = "mednerf_chest",
        out: str = "drr_out",
        method: str = "joseph",
        step_mm: float | None = None,
        mu_water_per_mm: float = MU_WATER_PER_MM,
        noise_i0: float | None = None,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        """Simulate X-rays (DRRs) of a CT and write them with their geometry.

        Writes OUT/projections.nii.gz (float line integrals), OUT/png/view_NNN.png (16-bit),
        OUT/geometry.json (with the isocenter resolved to the CT centre) and OUT/projections.json.

        Args:
            ct: CT volume in HU: NIfTI, NRRD or MHA file, a folder with one DICOM series, or
                'example' for the embedded example chest CT.
            geometry: preset name (see `monai-gnerf presets`) or a geometry JSON file.
            out: output folder.
            method: 'joseph' (fast), 'trilinear' (ray marching, see --step_mm) or 'siddon' (exact voxel lengths).
            step_mm: ray-marching step in mm for 'trilinear' (default: half the smallest voxel spacing).
            mu_water_per_mm: attenuation of water in 1/mm used for HU -> attenuation.
            noise_i0: if set, add Poisson noise with this many photons per pixel plus electronic noise.
            device: 'cpu' or 'cuda'.
            seed: random seed for the noise.
        """
        geo = load_geometry(geometry)
        ct_path = _ct_path(ct)
        volume = load_ct(ct_path).to(_device(device))
        mu = HUToAttenuation(mu_water_per_mm)(volume)
        with torch.no_grad():
            drr = GenerateDRR(geo, method=method, step_mm=step_mm, progress=True)(mu)
        if noise_i0 is not None:
            drr = add_detector_noise(drr, i0_photons=noise_i0, generator=torch.Generator(drr.device).manual_seed(seed))
        resolved = load_geometry(drr.meta["geometry"])
        extra = {
            "source": str(ct_path.resolve()),
            "method": method,
            "mu_water_per_mm": mu_water_per_mm,
            "noise_i0": noise_i0,
            "volume_affine": volume.affine.tolist(),
            "volume_shape": list(volume.shape),
        }
        save_projections(out, drr, resolved, extra)
        print(f"wrote {resolved.num_views} DRRs of {resolved.detector_shape[0]}x{resolved.detector_shape[1]} to {out}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs :class:`Commands` and turns user errors into one-line messages."""
    try:
        fire.Fire(Commands, command=argv, name="monai-gnerf")
    except GnerfInputError as err:
        print(f"monai-gnerf: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("monai-gnerf: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
