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

from monai_gnerf.bundle_support import check_device
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import list_presets, load_geometry
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.networks.generator import GeneratorConfig
from monai_gnerf.prior import PriorConfig
from monai_gnerf.single_view import SingleViewConfig
from monai_gnerf.workflows import (
    reconstruct_folder,
    simulate_drrs,
    single_view_reconstruction,
    sparse_view_demo,
    train_prior_workflow,
)

__all__ = ["Commands", "main"]


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
            ct, geometry, out, method, step_mm, mu_water_per_mm, noise_i0, views, check_device(device), seed  # type: ignore[arg-type]
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
            work_dir, tensorboard_dir, check_device(device),
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
        summary = sparse_view_demo(out, views, budget_s, spacing_mm, device=check_device(device))
        for name, values in summary["metrics"].items():
            print(f"{name:5s} 3D PSNR {values['psnr_3d']:.2f} dB  SSIM {values['ssim_3d']:.3f}  ({values['seconds']:.0f} s)")
        for name, path in summary["outputs"].items():
            print(f"{name:8s} {path}")
        print(f"metrics  {Path(out) / 'metrics.json'}")

    def train_prior(
        self,
        data: str = "phantoms",
        out: str = "outputs/prior",
        geometry: str = "mednerf_chest",
        detector_size: int = 64,
        subjects: int = 32,
        iterations: int = PriorConfig.max_iterations,
        budget_s: float | None = None,
        batch_size: int = PriorConfig.batch_size,
        patch_size: int = PriorConfig.patch_size,
        samples_per_ray: int = GeneratorConfig.num_samples,
        render_mode: str = "line_integral",
        tensorboard_dir: str | None = None,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        """Train a generative radiance-field prior (GRAF/MedNeRF) on X-ray views.

        Writes OUT/generator.pt (the EMA generator, its geometry and metadata), OUT/checkpoints/
        (resumable: the same command continues the run) and OUT/checkpoints/samples.png.

        Args:
            data: 'phantoms' or 'phantoms:knee' (procedural population, exact DRRs), a MedNeRF-format
                folder (one sub-folder of PNG views per subject) or a CT file/folder (DRRs on the fly).
            out: output folder.
            geometry: preset name or geometry JSON file of the training views.
            detector_size: training detector pixels per side (same physical detector).
            subjects: number of phantom subjects.
            iterations: iteration budget.
            budget_s: wall-time budget in seconds (across resumes).
            batch_size: patches per step.
            patch_size: rays per patch side.
            samples_per_ray: stratified samples per ray.
            render_mode: 'line_integral' (X-ray physics) or 'alpha' (NeRF alpha compositing).
            tensorboard_dir: write TensorBoard logs (losses, sample renders) here.
            device: 'cpu' or 'cuda'.
            seed: random seed.
        """
        generator = GeneratorConfig(num_samples=samples_per_ray, render_mode=render_mode)  # type: ignore[arg-type]
        config = PriorConfig(generator=generator, patch_size=patch_size, batch_size=batch_size,
                             max_iterations=iterations, budget_s=budget_s, seed=seed)  # fmt: skip
        path = train_prior_workflow(data, geometry, out, detector_size, subjects, config, tensorboard_dir, check_device(device))
        print(f"wrote {path}")

    def single_view(
        self,
        xray: str,
        checkpoint: str,
        out: str = "outputs/single_view",
        angle_deg: float = 0.0,
        optimize_pose: bool = False,
        weighting: str = "uncertainty",
        structural_loss: str = "ssim",
        vgg_weights: str | None = None,
        latent_iterations: int = 150,
        finetune_iterations: int = 150,
        restarts: int = 4,
        views: int = 72,
        volume_size: int = 64,
        units: str = "hu",
        device: str = "cpu",
    ) -> None:
        """Reconstruct from ONE X-ray with a trained prior: 72 views (PNG, NIfTI, GIF) and a volume.

        Args:
            xray: the radiograph: DICOM DX/CR (pixel spacing, distances, MONOCHROME1, rescale and
                VOI LUT honoured), a 16-bit PNG, or a 2D/one-slice NIfTI.
            checkpoint: generator file from `monai-gnerf train-prior` (OUT/generator.pt).
            out: output folder (views/, views.gif, volume.nii.gz, fit.json).
            angle_deg: orbit angle of the X-ray (0 = PA); the start value with --optimize_pose.
            optimize_pose: fit the view angle jointly.
            weighting: 'uncertainty' (UMedNeRF learned weights) or 'fixed' (MedNeRF).
            structural_loss: 'ssim' (no weights needed) or 'vgg' (needs --vgg_weights).
            vgg_weights: local torchvision vgg16 state-dict file.
            latent_iterations: GAN-inversion steps per restart.
            finetune_iterations: generator fine-tuning steps.
            restarts: random latent starts.
            views: number of output views over 360 degrees.
            volume_size: output volume voxels per side.
            units: 'hu' or 'mu' (1/mm).
            device: 'cpu' or 'cuda'.
        """
        config = SingleViewConfig(
            angle_deg=angle_deg, optimize_pose=optimize_pose, weighting=weighting, structural_loss=structural_loss,  # type: ignore[arg-type]
            vgg_weights=vgg_weights, latent_iterations=latent_iterations, finetune_iterations=finetune_iterations,
            restarts=restarts,
        )  # fmt: skip
        summary = single_view_reconstruction(xray, checkpoint, out, config, views, volume_size, units, check_device(device))  # type: ignore[arg-type]
        print(f"angle {summary['angle_deg']:.1f} deg; wrote {out}/views, {out}/views.gif, {out}/volume.nii.gz")


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
