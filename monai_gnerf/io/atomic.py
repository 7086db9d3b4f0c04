"""Writing outputs safely: destinations are checked before work starts, writes are atomic.

* :func:`check_output`: called by every job on its destinations before any work starts: the
  nearest existing folder above it must be writable (missing folders below it are made), a file
  must not be a folder (and the reverse), an existing output is replaced only with ``overwrite``
  (the CLI's ``--overwrite``), and the disk must have room for the estimated size.
* :func:`atomic_output_file` / :func:`atomic_output_dir`: write into a temporary sibling, rename
  on success; a failed or interrupted write (including a full disk or a folder made read-only
  mid-run, reported as one :class:`~monai_gnerf.errors.GnerfInputError` line) leaves nothing
  partial behind.
* :func:`removed_on_failure`: a job that writes into its output folder as it goes (the demo)
  removes the folder again when it fails, if the job created it.
* :func:`write_json`: a summary file (``metrics.json``, ``fit.json``), atomically, as strict JSON:
  a non-finite number (the PSNR of identical images) is written as ``null``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from monai_gnerf.errors import GnerfInputError

__all__ = ["atomic_output_dir", "atomic_output_file", "check_output", "format_bytes", "removed_on_failure", "write_json"]

_WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR}
_SPACE_MARGIN = 1.1  # ask for 10 % more free space than the estimate


def format_bytes(size: float) -> str:
    """``size`` bytes as text with a binary unit (``"1.5 GiB"``)."""
    units, power = ("B", "KiB", "MiB", "GiB", "TiB", "PiB"), 0
    while abs(size) >= 1024 and power < len(units) - 1:
        size, power = size / 1024, power + 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists (a file there means the path cannot be made)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def check_output(
    path: str | Path,
    kind: Literal["file", "dir"],
    overwrite: bool = False,
    contents: Sequence[str] | None = None,
    estimated_bytes: float = 0.0,
    option: str = "output",
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Check an output destination before any work starts.

    Args:
        path: the file or folder a job will write.
        kind: ``"file"`` or ``"dir"``.
        overwrite: whether an existing output may be replaced.
        contents: for a folder, the names the job writes in it: the folder counts as an existing
            output only when one of them is there (``None``: when it is not empty).
        estimated_bytes: the size the job will write; the disk must have that much free.
        option: the option that named ``path``, for the message (default ``output``: the same
            word for the CLI's ``--out`` and the bundle's ``output_dir``).
        inputs: the files and folders the job reads; none may be an output it replaces (the
            file, or the ``contents`` of the folder), even with ``overwrite``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        GnerfInputError: one line naming the destination and the problem.
    """
    if not str(path).strip():  # Path("") would be the current folder
        raise GnerfInputError(f"{option} is empty; give a {'file' if kind == 'file' else 'folder'} name.")
    path = Path(os.path.normpath(path))  # 'out/views/..' is 'out': its existence and name are those of 'out'
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise GnerfInputError(f"cannot write {option} {path}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise GnerfInputError(f"cannot write {option} {path}: {ancestor} is not writable.")
    _check_not_an_input(path, [path] if kind == "file" else [path / name for name in contents or ()], inputs, option)
    if path.exists():
        _check_existing(path, kind, overwrite, contents, option)
    usage = shutil.disk_usage(ancestor)
    if usage.total == 0:  # /proc, /sys: nothing can be stored there, whatever the permissions say
        raise GnerfInputError(f"cannot write {option} {path}: {ancestor} is a virtual file system, not storage.")
    free = usage.free
    if estimated_bytes * _SPACE_MARGIN > free:
        raise GnerfInputError(
            f"not enough disk space for {option} {path}: about {format_bytes(estimated_bytes)} needed, "
            f"{format_bytes(free)} free on {ancestor}."
        )
    return path


def _check_not_an_input(path: Path, replaced: Sequence[Path], inputs: Sequence[str | Path], option: str) -> None:
    """Refuse a destination whose outputs would replace one of the job's inputs (or a folder holding one)."""
    targets = [t.resolve() for t in replaced]
    for source in (Path(i).resolve() for i in inputs):
        for target in targets:
            if source == target or target in source.parents:
                raise GnerfInputError(f"{option} {path} would replace the input {source}; write elsewhere.")


def _check_existing(path: Path, kind: str, overwrite: bool, contents: Sequence[str] | None, option: str) -> None:
    if kind == "file" and path.is_dir():
        raise GnerfInputError(f"{option} {path} is a folder; give a file name.")
    if kind == "dir" and not path.is_dir():
        raise GnerfInputError(f"{option} {path} is a file, not a folder.")
    if kind == "dir" and not os.access(path, os.W_OK | os.X_OK):
        raise GnerfInputError(f"cannot write {option} {path}: it is not writable.")
    if kind == "file":
        present = [path.name]
    else:
        present = [n for n in contents if (path / n).exists()] if contents is not None else os.listdir(path)
    if present and not overwrite:
        what = path if kind == "file" else f"{path} (holding {', '.join(sorted(present)[:3])})"
        raise GnerfInputError(f"{option} {what} exists; pass --overwrite to replace it.")


@contextlib.contextmanager
def _write_errors_reported(path: Path) -> Iterator[None]:
    """A write that fails for a reason the user can fix (disk full, read-only) becomes one line."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_ERRORS:
            raise
        raise GnerfInputError(f"could not write {path}: {err.strerror}.") from None


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Write into a temporary sibling folder, then move its files into ``out_dir`` on success.

    On any error (or Ctrl-C) the temporary folder is removed, so no partial output is left.
    """
    out_dir = Path(os.path.abspath(out_dir))  # '.' and 'a/b/..' have no usable name or parent
    staging = None
    try:
        with _write_errors_reported(out_dir):
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
            yield staging
            out_dir.mkdir(exist_ok=True)
            for item in staging.iterdir():
                target = out_dir / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only when the block succeeds."""
    path = Path(os.path.abspath(path))
    tmp = None
    try:
        with _write_errors_reported(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix="".join(path.suffixes), dir=path.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            yield tmp
            os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the file normal permissions
            os.replace(tmp, path)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def removed_on_failure(folder: str | Path) -> Iterator[Path]:
    """Yield ``folder``; if the block fails (or is interrupted) and the folder did not exist
    before it, the folder is removed. A folder that existed is left as it is."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        yield folder
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented strict JSON (atomically); non-finite floats become ``null``."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
    return Path(path)


def _finite(data: object) -> object:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data
