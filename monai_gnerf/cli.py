"""The ``monai-gnerf`` command line (python-fire).

Run ``monai-gnerf --help`` or ``monai-gnerf COMMAND --help`` for the options of each command.
User errors (missing files, bad geometry, invalid volumes) print one line and exit with status 2;
Ctrl-C exits with status 130 and leaves no partial output.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire
import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import list_presets, load_geometry
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.workflows import reconstruct_folder, simulate_drrs, sparse_view_demo

__all__ = ["Commands", "main"]


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
        views: int | None = None,
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
            views: if set, replace the geometry's angles by this many views evenly over 360 degrees.
            mu_water_per_mm: attenuation of water in 1/mm used for HU -> attenuation.
            noise_i0: if set, add Poisson noise with this many photons per pixel plus electronic noise.
            device: 'cpu' or 'cuda'.
            seed: random seed for the noise.
        """
        out_dir = simulate_drrs(
            ct, geometry, out, method, step_mm, mu_water_per_mm, noise_i0, views, _device(device), seed  # type: ignore[arg-type]
        )
        print(f"wrote DRRs to {out_dir}")

    def reconstruct(
        self,
        projections: str,
        out: str = "reconstruction.nii.gz",
        method: str = "grid",
        mask: str = "silhouette",
        budget_s: float | None = 120.0,
        iterations: int = 1500,
        spacing_mm: float | None = None,
        units: str = "hu",
        work_dir: str | None = None,
        tensorboard_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        """Reconstruct a CT volume from a projection folder (as written by `monai-gnerf drr`).

        The folder needs geometry.json and projections.nii.gz (or PNG views). The volume is written
        as NIfTI on the source CT's grid when the folder records it (so it overlays the CT), else on
        the detector's field of view around the isocenter.

        Args:
            projections: projection folder.
            out: output NIfTI path.
            method: 'grid' (multi-resolution grid field, default), 'naf' (hash grid + MLP),
                'nerf' (frequency-encoded MLP) or 'fdk' (analytic FDK/FBP).
            mask: 'silhouette' (carved from the projections, 3 mm margin), 'none', or a mask file.
            budget_s: wall-time budget in seconds (training methods).
            iterations: iteration budget (training methods).
            spacing_mm: output voxel size in mm (default: the data's natural resolution).
            units: 'hu' or 'mu' (attenuation in 1/mm).
            work_dir: folder for checkpoints; a run there resumes from its last checkpoint.
            tensorboard_dir: write TensorBoard logs here.
            device: 'cpu' or 'cuda'.
        """
        result = reconstruct_folder(
            projections, out, method, mask, budget_s, iterations, spacing_mm, units,  # type: ignore[arg-type]
            work_dir, tensorboard_dir, _device(device),
        )  # fmt: skip
        print(f"wrote {out} ({result.iterations} iterations, {result.seconds:.0f} s)")

    def demo(
        self, out: str = "outputs/demo", views: int = 20, budget_s: float = 90.0, spacing_mm: float = 3.0, device: str = "cpu"
    ) -> None:
        """The main job: sparse-view reconstruction of the embedded example chest CT.

        Simulates VIEWS cone-beam X-rays, reconstructs with FDK and with our masked grid field,
        and writes truth/fdk/grid NIfTI volumes (HU, overlaying the CT), figure.png and metrics.json.

        Args:
            out: output folder.
            views: number of projections over 360 degrees.
            budget_s: training time budget in seconds.
            spacing_mm: voxel size of the reconstruction grid, mm.
            device: 'cpu' or 'cuda'.
        """
        summary = sparse_view_demo(out, views, budget_s, spacing_mm, device=_device(device))
        for name, values in summary["metrics"].items():
            print(f"{name:5s} 3D PSNR {values['psnr_3d']:.2f} dB  SSIM {values['ssim_3d']:.3f}  ({values['seconds']:.0f} s)")
        for name, path in summary["outputs"].items():
            print(f"{name:8s} {path}")
        print(f"metrics  {Path(out) / 'metrics.json'}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs :class:`Commands` and turns user errors into one-line messages."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
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
