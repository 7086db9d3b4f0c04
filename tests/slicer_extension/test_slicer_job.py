"""Tests of ``GnerfReconstructionLib.job``: the state machine on small Python processes (no Slicer), and
cancelling a bundle process started by the logic on a real MRML scene (``slicer-core``)."""

from __future__ import annotations

import sys
import time
import types

import pytest
from GnerfReconstructionLib.job import GnerfProcessError, ReconstructionJob, Step
from GnerfReconstructionLib.parameters import ReconstructionParameters
from slicer_testing import TINY_PIXEL_MM, TINY_VIEWS, alive, xray_nodes


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _job(tmp_path, steps, load_result, keep_temp=False, **callbacks) -> ReconstructionJob:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    return ReconstructionJob(steps, load_result, work_dir, None, keep_temp, **callbacks)


def _run(job: ReconstructionJob, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while job.poll():
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)


def _never_loaded():
    pytest.fail("the result was loaded although a step failed")


def test_job_runs_its_steps_in_order_then_loads_the_result(tmp_path):
    volume = types.SimpleNamespace(GetName=lambda: "volume")
    progress: list[float] = []
    steps = [Step("first", _python("print('one')")), Step("second", lambda: _python("print('two')"), weight=3.0)]
    job = _job(tmp_path, steps, lambda: (volume, None), on_progress=lambda fraction, text: progress.append(fraction))
    _run(job)
    assert job.state == "done" and job.error == ""
    assert job.result.volume_node is volume and job.result.views_node is None
    assert job.log_lines.index("one") < job.log_lines.index("two")
    assert job.log_lines[0].startswith("[first] ") and sys.executable in job.log_lines[0]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert not job.work_dir.exists()  # not kept


def test_a_failing_step_ends_the_job_with_its_one_line_message(tmp_path):
    fails = _python("import sys; print('working'); sys.exit('monai-gnerf: error: no projection folder here')")
    steps = [Step("fails", fails), Step("never", lambda: pytest.fail("a step started after a failure"))]
    job = _job(tmp_path, steps, _never_loaded, keep_temp=True)
    _run(job)
    assert job.state == "failed" and job.error == "no projection folder here"
    assert job.result is None and not job.poll()
    assert "temporary folder kept" in job.log_lines[-1]
    assert "working" in (job.work_dir / "log.txt").read_text()


def test_a_step_that_cannot_start_fails_the_job_with_a_message(tmp_path):
    missing = tmp_path / "no-such-python"
    job = _job(tmp_path, [Step("start", lambda: [str(missing)])], _never_loaded)
    _run(job)
    assert job.state == "failed" and job.error.startswith(f"cannot start {missing}: ")


def test_output_that_cannot_be_loaded_fails_the_job(tmp_path):
    load_error = "volume.nii.gz is not a 3D volume (shape (4, 4))."

    def load_result():
        raise GnerfProcessError(load_error)

    job = _job(tmp_path, [Step("runs", _python("pass"))], load_result)
    _run(job)
    assert job.state == "failed"
    assert job.error == f"the bundle ran but its output could not be loaded: {load_error}"


def test_cancel_stops_the_bundle_process(slicer_module, logic_module, tiny_drrs):
    slicer, logic = slicer_module, logic_module
    scene = slicer.vtkMRMLScene()
    ids = xray_nodes(slicer, scene, tiny_drrs[0], TINY_PIXEL_MM)
    params = ReconstructionParameters(xray_node_ids=ids, method="grid", budget_s=600.0)
    job = logic.GnerfReconstructionLogicCore(scene).start(params)
    runner = job._runner
    assert job.running and runner is not None and runner.pid is not None
    time.sleep(1.0)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    assert job.state == "cancelled" and not job.poll()
    assert runner.poll() is not None  # the process ended
    assert not alive(runner.pid)
    assert not job.work_dir.exists()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == TINY_VIEWS  # nothing was added
