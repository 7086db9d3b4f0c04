"""The machine's resources a job may ask for: memory, checked before a large allocation, and CPUs.

A job estimates the memory it needs from its sizes (voxels, pixels, views) before it allocates
anything; :func:`check_memory` refuses a job that cannot fit, with the estimate in the message,
instead of letting the allocator fail (or the system swap) hours later.

:func:`available_cpus` counts the CPUs this process may really use (its affinity mask, bounded
by a cgroup CPU quota, as in a container), which ``os.cpu_count()`` does not; the command line
sets torch's intra-op threads from it (or from ``--threads``) with :func:`set_threads`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.io.atomic import format_bytes

__all__ = ["available_cpus", "available_memory_bytes", "check_memory", "set_threads"]

_MEMINFO = Path("/proc/meminfo")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota us> <period us>" or "max <period>"


def available_memory_bytes() -> int:
    """Memory available to a new allocation: ``MemAvailable`` on Linux, else the physical memory."""
    if _MEMINFO.is_file():
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(estimated_bytes: float, what: str) -> None:
    """Refuse a job whose estimated memory exceeds what is available.

    Args:
        estimated_bytes: the job's estimate.
        what: the job and its size, for the message (e.g. ``"a 2000^3 grid"``).

    Raises:
        GnerfInputError: naming the estimate and the available memory.
    """
    available = available_memory_bytes()
    if estimated_bytes > available:
        raise GnerfInputError(
            f"{what} needs about {format_bytes(estimated_bytes)} of memory; {format_bytes(available)} is available."
        )


def _cgroup_cpu_limit(cpu_max: Path) -> int | None:
    """CPUs allowed by a cgroup v2 quota (rounded up), or ``None`` without a quota."""
    if not cpu_max.is_file():
        return None
    quota, _, period = cpu_max.read_text().strip().partition(" ")
    if quota == "max" or not period:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cpus(cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, bounded by the cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cpu_max)
    return min(cpus, limit) if limit is not None else cpus


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`available_cpus`) and return it.

    Raises:
        GnerfInputError: ``threads`` is not a positive integer.
    """
    if threads is None:
        threads = available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise GnerfInputError(f"--threads must be an integer >= 1, got {threads!r}.")
    torch.set_num_threads(threads)
    return threads
