"""Exceptions raised for bad user input.

Every problem a user can fix (a missing file, a nonsense geometry, NaN voxels, an incompatible
checkpoint) is reported as a :class:`GnerfInputError` with one sentence naming the problem. The
command-line interface prints that sentence alone, without a traceback.
"""

from __future__ import annotations

__all__ = ["GnerfInputError", "GeometryError", "VolumeError", "first_line"]


class GnerfInputError(ValueError):
    """Base class for errors caused by user-supplied data or options."""


class GeometryError(GnerfInputError):
    """A projection geometry is inconsistent or physically impossible."""


class VolumeError(GnerfInputError):
    """A CT volume is missing, unreadable or holds invalid values."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
