"""Exceptions raised for bad user input.

Every problem a user can fix (a missing file, a nonsense geometry, NaN voxels, an incompatible
checkpoint) is reported as a :class:`GnerfInputError` with one sentence naming the problem. The
command-line interface prints that sentence alone, without a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "GnerfInputError",
    "GeometryError",
    "VolumeError",
    "ErrorsReportedOnce",
    "error_behind",
    "first_line",
    "input_error_behind",
    "input_errors_surface",
    "report_interrupted",
]


class GnerfInputError(ValueError):
    """Base class for errors caused by user-supplied data or options."""


class GeometryError(GnerfInputError):
    """A projection geometry is inconsistent or physically impossible."""


class VolumeError(GnerfInputError):
    """A CT volume is missing, unreadable or holds invalid values."""


_SOURCE_LOCATION = re.compile(r"\.(c|cc|cpp|cxx|h|hxx)(:\d+)+:?$")  # ITK's "...itkPNGImageIO.cxx:249:" line
_ITK_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")


def report_interrupted() -> None:
    """Say on stderr, in one line, that a Ctrl-C ended the program (every front door: the CLI, its
    entry point, the bundle). On a terminal the line starts afresh: the cursor stands after the
    echoed ``^C``, often at the end of a progress bar."""
    fresh_line = "\n" if sys.stderr.isatty() else ""
    print(f"{fresh_line}monai-gnerf: interrupted", file=sys.stderr)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message that says something (not a C++ source location,
    without ITK's ``ITK ERROR: Class(0x...):`` prefix), or its type's name when there is none."""
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not _SOURCE_LOCATION.search(line)]
    return _ITK_PREFIX.sub("", lines[0]) if lines else type(err).__name__


def error_behind(error: BaseException | None, matches: Callable[[BaseException], bool]) -> BaseException | None:
    """The first error that ``matches`` among ``error`` and its ``__cause__`` / ``__context__``
    chain (where MONAI's transforms, engines and config parser wrap it), or ``None``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if matches(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def input_error_behind(error: BaseException | None) -> GnerfInputError | None:
    """The :class:`GnerfInputError` that caused ``error`` (see :func:`error_behind`), or ``None``."""
    found = error_behind(error, lambda e: isinstance(e, GnerfInputError))
    return found if isinstance(found, GnerfInputError) else None


@contextmanager
def input_errors_surface() -> Iterator[None]:
    """Let a bad input met inside MONAI code come out as its own :class:`GnerfInputError`: MONAI
    re-raises a transform's error as a ``RuntimeError`` whose cause it is."""
    try:
        yield
    except RuntimeError as err:
        cause = input_error_behind(err)
        if cause is None:
            raise
        raise cause from None


class ErrorsReportedOnce:
    """An Ignite (MONAI workflow) handler that leaves the reporting of an error to the program.

    Attached before handlers that log an error with its traceback (MONAI's ``StatsHandler``), it
    raises the error again at once (Ignite runs no further handler of an error one raises) and
    drops Ignite's own "terminating due to exception" log line, so a bad input or a Ctrl-C ends in
    the program's one line. Handlers that must act on an error (a checkpoint on Ctrl-C) go first.
    """

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events  # the bottom layer imports Ignite only when a handler is used

        engine.logger.addFilter(_not_a_termination_record)
        engine.add_event_handler(Events.EXCEPTION_RAISED, _raise_again)


def _not_a_termination_record(record: logging.LogRecord) -> bool:
    return "run is terminating due to exception" not in record.getMessage()


def _raise_again(_: Any, error: BaseException) -> None:
    raise error
