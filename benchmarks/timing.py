"""What the timed benchmarks share: their thread count and the optional busy neighbour.

Timings are figures only on a quiet machine; ``busy_process`` makes the shared-machine case
reproducible instead (``--contended``): one CPU-bound process runs beside the timed work.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

THREADS = 2  # the development machine's cores: every timed tool gets the same


@contextlib.contextmanager
def busy_process(enabled: bool) -> Iterator[None]:
    """Run one CPU-bound Python process for the duration of the block when ``enabled``; it is
    killed on the way out, also on errors and Ctrl-C."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
