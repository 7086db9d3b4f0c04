"""Progress bars that suit where they are shown: live on a terminal, a line every 30 s in a log.

On a terminal a bar redraws every 0.1 s; when stderr is a file or a pipe (a bundle log, Slicer's
process output, CI) every redraw would append a line, so a bar redraws at most every
:data:`LOG_INTERVAL_S` seconds there.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "bar_interval_s", "progress_bar"]

LOG_INTERVAL_S = 30.0
_TERMINAL_INTERVAL_S = 0.1


def bar_interval_s() -> float:
    """Seconds between redraws: 0.1 on a terminal, :data:`LOG_INTERVAL_S` otherwise."""
    return _TERMINAL_INTERVAL_S if sys.stderr.isatty() else LOG_INTERVAL_S


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)`` redrawn every :func:`bar_interval_s` seconds."""
    return tqdm(*args, mininterval=bar_interval_s(), **kwargs)
