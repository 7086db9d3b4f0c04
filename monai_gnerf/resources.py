"""The machine's resources a job may ask for: memory, checked before a large allocation.

A job estimates the memory it needs from its sizes (voxels, pixels, views) before it allocates
anything; :func:`check_memory` refuses a job that cannot fit, with the estimate in the message,
instead of letting the allocator fail (or the system swap) hours later.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.io.atomic import format_bytes

__all__ = ["available_memory_bytes", "check_memory"]

_MEMINFO = Path("/proc/meminfo")


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
