"""CPUs and memory: thread selection from the affinity mask and cgroup quota, ``--threads``, memory refusal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from monai_gnerf.apps.cli import main
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.resources import available_cpus, available_memory_bytes, check_memory, set_threads


@pytest.mark.parametrize(("cpu_max", "expected_limit"), [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1)])
def test_available_cpus_respects_the_cgroup_quota(tmp_path, cpu_max, expected_limit):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "cpu.max") == (mask if expected_limit is None else min(mask, expected_limit))
    assert available_cpus(tmp_path / "absent") == mask


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity calls")
def test_a_process_pinned_to_one_cpu_uses_one_thread():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from monai_gnerf.resources import set_threads; import torch; set_threads(); print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "1"


def test_threads_option_sets_torch_threads_and_is_checked(capsys):
    before = torch.get_num_threads()
    try:
        main(["--threads", "1", "presets"])
        assert torch.get_num_threads() == 1
        main(["presets", "--threads=2"])
        assert torch.get_num_threads() == 2
        with pytest.raises(SystemExit) as exit_info:
            main(["presets", "--threads", "zero"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().endswith("--threads must be an integer >= 1, got 'zero'.")
        with pytest.raises(GnerfInputError, match="got 0"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_memory_check_refuses_more_than_is_available():
    check_memory(1024, "a small job")
    with pytest.raises(GnerfInputError, match=r"a huge job needs about .* of memory; .* is available"):
        check_memory(available_memory_bytes() * 2, "a huge job")
