"""Tests of ``GnerfReconstructionLib.process`` (no Slicer): progress parsing, one-line error messages,
process-tree cancel."""

from __future__ import annotations

import sys
import time

import pytest
from GnerfReconstructionLib.process import ProcessRunner, error_message, is_progress_bar, parse_progress
from slicer_testing import alive


def test_progress_parsing():
    assert parse_progress("Iteration: [20/1500]   1%|▏         , loss=0.00695 [00:02<02:57]") == pytest.approx(20 / 1500)
    assert parse_progress("DRR (joseph):  12%|█▎        | 1/8 [00:00<00:00,  7.94view/s]") == pytest.approx(1 / 8)
    assert parse_progress("04:25:57 INFO ignite.engine.engine.Engine: Engine run starting") is None
    assert is_progress_bar("DRR (joseph): 100%|██████████| 8/8 [00:00<00:00, 41.85view/s]")
    assert not is_progress_bar("04:26:00 INFO monai_gnerf.workflows: wrote out.nii.gz")


def test_error_message_is_the_one_line_user_error_or_the_exception():
    traceback_lines = ["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: bad thing"]
    assert error_message(["INFO start", "monai-gnerf: error: projection folder not found: /x"]) == (
        "projection folder not found: /x"
    )
    assert error_message(traceback_lines) == "ValueError: bad thing"
    assert error_message([], returncode=3) == "the process ended with status 3 without a message."


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('child started', flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = ProcessRunner([sys.executable, "-c", script]).start()
    deadline = time.monotonic() + 20
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(5) is not None
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while alive(child):
        assert time.monotonic() < deadline, "the grandchild survived the cancel"
        time.sleep(0.05)
