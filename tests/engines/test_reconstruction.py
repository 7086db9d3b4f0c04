from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from gnerf_testing import grid_fit_psnr, small_cone

from monai_gnerf.apps import DRRConfig, SparseViewJobConfig, reconstruct_folder, simulate_drrs
from monai_gnerf.data import shepp_logan_phantom
from monai_gnerf.data.phantoms import grid_affine
from monai_gnerf.io import fingerprint
from monai_gnerf.engines import ReconstructionConfig, latest_checkpoint, reconstruct
from monai_gnerf.engines.reconstruction import CHECKPOINT_PREFIX
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.metrics import normalize_to_reference, psnr
from monai_gnerf.render import fdk

SHAPE, SPACING = (40, 40, 40), (5.0, 5.0, 5.0)
GEOMETRY = small_cone(12, 48, 7.0)


@pytest.fixture(scope="module")
def problem():
    """Exact (closed-form) projections of a smooth head phantom and its voxelized truth."""
    phantom = shepp_logan_phantom(90.0, profile=1)
    truth = phantom.voxelize(SHAPE, SPACING, supersample=2).as_tensor()
    projections = phantom.line_integrals(*GEOMETRY.rays(dtype=torch.float64)).float()
    return projections, truth, grid_affine(SHAPE, SPACING)


def test_fdk_of_many_views_matches_the_phantom():
    phantom = shepp_logan_phantom(100.0, profile=0)
    shape, spacing = (64, 64, 64), (3.5, 3.5, 3.5)
    truth = phantom.voxelize(shape, spacing, supersample=2).as_tensor()
    for beam, pitch in (("parallel", 2.6), ("cone", 4.6)):
        g = ProjectionGeometry(
            beam=beam, angles_deg=tuple(np.arange(120) * 3.0), detector_shape=(96, 96), pixel_spacing_mm=(pitch, pitch),
            source_to_isocenter_mm=600.0 if beam == "cone" else None,
            source_to_detector_mm=1050.0 if beam == "cone" else None, isocenter_mm=(0.0, 0.0, 0.0),
        )  # fmt: skip
        volume = fdk(phantom.line_integrals(*g.rays(dtype=torch.float64)).float(), g, shape, grid_affine(shape, spacing))
        region = (slice(16, 22), slice(28, 36), slice(38, 44))  # uniform brain tissue
        assert truth[region].min() == truth[region].max() == pytest.approx(0.02)
        assert volume[region].mean().item() == pytest.approx(0.02, rel=0.02)
        assert psnr(*normalize_to_reference(volume, truth), data_range=1.0) > 30.0


def test_grid_field_recovers_the_phantom_better_than_fdk(problem, tmp_path):
    from gnerf_testing import tensorboard_scalars

    projections, truth, affine = problem
    baseline = psnr(*normalize_to_reference(fdk(projections, GEOMETRY, SHAPE, affine), truth), 1.0)
    # the default step (0.08) is chosen for full-size fits of minutes; on this 40^3 toy, stopped
    # after 80 iterations, half of it converges further (43.0 against 38.3 dB)
    config = ReconstructionConfig(method="grid", max_iterations=80, rays_per_batch=8192, learning_rate=0.04,
                                  log_every=10**6, validate_every=40)  # fmt: skip
    result = reconstruct(projections, GEOMETRY, SHAPE, affine, config, reference=truth, progress=False,
                         tensorboard_dir=tmp_path / "tb")  # fmt: skip
    assert result.metrics["psnr_3d"] > 40.0
    assert result.metrics["psnr_3d"] > baseline + 2.0
    assert torch.equal(result.volume.affine, affine)
    logged = tensorboard_scalars(tmp_path / "tb")
    steps = sorted({step for step, _ in logged["val_psnr_3d"]})
    assert steps == [40, 80] and [step for step, _ in logged["val_ssim_3d"]][-1] == 80  # validation, at the iteration
    assert max(v for step, v in logged["val_psnr_3d"] if step == 80) == pytest.approx(result.metrics["psnr_3d"], abs=1e-4)


@pytest.mark.parametrize("method", ["naf", "nerf"])
def test_neural_fields_reduce_the_projection_loss(problem, method):
    projections, truth, affine = problem

    def run(iterations):
        config = ReconstructionConfig(
            method=method, max_iterations=iterations, rays_per_batch=1024, samples_per_ray=24, learning_rate=5e-3,
            final_lr_fraction=1.0, log_every=10**6,
        )  # fmt: skip
        return reconstruct(projections, GEOMETRY, SHAPE, affine, config, progress=False).metrics["data_loss"]

    assert run(30) < 0.5 * run(1)


def test_mask_forces_zero_outside(problem):
    projections, truth, affine = problem
    mask = torch.zeros(SHAPE)
    mask[5:35, 5:35, 5:35] = 1
    config = ReconstructionConfig(method="grid", max_iterations=5, rays_per_batch=2048)
    volume = reconstruct(projections, GEOMETRY, SHAPE, affine, config, mask=mask, progress=False).volume
    assert (volume[mask == 0] == 0).all() and volume[mask == 1].max() > 0.01


RUNNER = textwrap.dedent(
    """
    import sys, torch
    from monai_gnerf.geometry import ProjectionGeometry
    from monai_gnerf.data import shepp_logan_phantom
    from monai_gnerf.data.phantoms import grid_affine
    from monai_gnerf.engines import ReconstructionConfig, reconstruct
    g = ProjectionGeometry(beam="cone", angles_deg=tuple(range(0, 360, 12)), detector_shape=(48, 48),
        pixel_spacing_mm=(7.0, 7.0), source_to_isocenter_mm=500.0, source_to_detector_mm=800.0,
        isocenter_mm=(0.0, 0.0, 0.0))
    p = shepp_logan_phantom(90.0, profile=1).line_integrals(*g.rays(dtype=torch.float64)).float()
    config = ReconstructionConfig(max_iterations=100000, rays_per_batch=2048, checkpoint_every=5)
    reconstruct(p, g, (40, 40, 40), grid_affine((40, 40, 40), (5.0, 5.0, 5.0)), config, work_dir=sys.argv[1],
        progress=False)
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # so the child Python installs its KeyboardInterrupt handler


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, problem):
    projections, truth, affine = problem
    work = tmp_path / "work"
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_default_sigint,  # a suite started in the background inherits an ignored SIGINT
    )  # fmt: skip
    deadline = time.time() + 120
    while latest_checkpoint(work, CHECKPOINT_PREFIX) is None and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0 and "interrupted: checkpoint saved" in output
    saved = latest_checkpoint(work, CHECKPOINT_PREFIX)
    iteration = int(saved.stem.rsplit("_", 1)[-1])
    assert iteration >= 5
    state = torch.load(saved, weights_only=True)
    assert state["run"]["iteration"] == iteration and state["run"]["method"] == "grid"
    config = ReconstructionConfig(max_iterations=iteration + 3, rays_per_batch=2048, checkpoint_every=5)
    resumed = reconstruct(projections, GEOMETRY, SHAPE, affine, config, work_dir=work, progress=False)
    assert resumed.iterations == iteration + 3  # continued, did not restart from zero


def test_incompatible_or_corrupt_checkpoints_are_refused(tmp_path, problem):
    projections, truth, affine = problem
    work = tmp_path / "work"
    reconstruct(projections, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=2, rays_per_batch=512),
                work_dir=work, progress=False)  # fmt: skip
    smaller = (20, 20, 20)
    with pytest.raises(GnerfInputError, match="holds a checkpoint of another run \\(different shape, inputs\\)"):
        reconstruct(projections, GEOMETRY, smaller, grid_affine(smaller, (10.0,) * 3),
                    ReconstructionConfig(max_iterations=4, rays_per_batch=512), work_dir=work, progress=False)  # fmt: skip
    other_patient = projections.flip(-1)  # same geometry and grid, other projections
    with pytest.raises(GnerfInputError, match="different inputs"):
        reconstruct(other_patient, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=4, rays_per_batch=512),
                    work_dir=work, progress=False)  # fmt: skip
    odd = work / f"{CHECKPOINT_PREFIX}_checkpoint_final.pt"  # a name that is not ours is ignored
    odd.write_bytes(b"")
    restarted = reconstruct(other_patient, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=3, rays_per_batch=512),
                            work_dir=work, progress=False, restart=True)  # fmt: skip
    assert restarted.iterations == 3 and odd.is_file()
    assert torch.load(latest_checkpoint(work, CHECKPOINT_PREFIX), weights_only=True)["run"]["inputs"] == fingerprint(
        other_patient, GEOMETRY.to_dict(), torch.as_tensor(affine, dtype=torch.float64), "no mask")  # fmt: skip
    with pytest.raises(GnerfInputError, match="different inputs"):  # the first patient's checkpoint is gone
        reconstruct(projections, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=4, rays_per_batch=512),
                    work_dir=work, progress=False)  # fmt: skip
    latest_checkpoint(work, CHECKPOINT_PREFIX).write_bytes(b"not a checkpoint")
    with pytest.raises(GnerfInputError, match="cannot load checkpoint .*torch.save; use another work folder, or --overwrite"):
        reconstruct(projections, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=4, rays_per_batch=512),
                    work_dir=work, progress=False)  # fmt: skip
    afresh = reconstruct(projections, GEOMETRY, SHAPE, affine, ReconstructionConfig(max_iterations=4, rays_per_batch=512),
                         work_dir=work, progress=False, restart=True)  # fmt: skip
    assert afresh.iterations == 4 and int(latest_checkpoint(work, CHECKPOINT_PREFIX).stem.rsplit("_", 1)[-1]) == 4


def test_exported_nifti_has_the_source_ct_affine(tmp_path):
    hu = np.full((36, 40, 30), -1000, dtype=np.int16)
    hu[8:28, 10:30, 5:25] = 60
    affine = np.array([[-4.0, 0, 0, 70.0], [0, 4.0, 0, -90.0], [0, 0, 5.0, -40.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(hu, affine), tmp_path / "ct.nii.gz")
    simulate_drrs(tmp_path / "ct.nii.gz", tmp_path / "drr", DRRConfig(geometry="x2ct_biplanar", views=24))
    for method in ("fdk", "grid"):
        out = tmp_path / f"{method}.nii.gz"
        fit = ReconstructionConfig(method=method, max_iterations=3, budget_s=None)
        reconstruct_folder(tmp_path / "drr", out, SparseViewJobConfig(fit=fit))
        written = nib.load(out)
        assert written.shape == hu.shape
        assert np.allclose(written.affine, affine, atol=1e-4)
        inside = np.asarray(written.dataobj)[12:24, 14:26, 10:20].mean()
        assert inside > -600  # tissue where the CT has tissue (HU)


def test_the_field_is_as_fine_as_the_detector_resolves_up_to_half_a_voxel():
    from monai_gnerf.engines import field_supersampling
    from monai_gnerf.geometry import load_geometry

    def factor(preset, spacing_mm, **options):
        return field_supersampling(ReconstructionConfig(**options), load_geometry(preset), torch.diag(torch.tensor([spacing_mm] * 3 + [1.0])))

    assert load_geometry("chest_cbct").pixel_spacing_mm[0] / load_geometry("chest_cbct").magnification == 2.5
    assert factor("chest_cbct", 2.5) == 1  # 2.5 mm pixels at the isocenter
    assert factor("chest_cbct", 5.0) == 2
    assert factor("naf", 2.5) == 2  # 1 mm pixels at the isocenter: 2.5, at most 2
    assert factor("naf", 1.4) == 1
    assert factor("naf", 2.5, supersample=1) == 1 and factor("chest_cbct", 2.5, supersample=3) == 3
    assert factor("naf", 2.5, method="naf") == factor("naf", 2.5, method="fdk") == 1


def test_a_field_finer_than_the_output_fits_sharp_edges_a_voxel_cannot_hold():
    """A sharp phantom seen by a detector three times finer than the 10 mm grid: fitted on 5 mm
    voxels and averaged, the output is far closer to the voxel-averaged truth than a fit on 10 mm."""
    phantom = shepp_logan_phantom(90.0, profile=0)
    shape, spacing = (20, 20, 20), (10.0, 10.0, 10.0)
    affine = grid_affine(shape, spacing)
    g = small_cone(12, 64, 4.8)
    truth = phantom.voxelize(shape, spacing, supersample=4).as_tensor()
    projections = phantom.line_integrals(*g.rays(dtype=torch.float64)).float()
    scores = grid_fit_psnr(projections, g, shape, affine, truth, "supersample", (1, None))
    assert scores[None] > scores[1] + 6.0  # measured: 26.8 and 37.6 dB
