"""Run a command as a separate process: stream its output, parse progress, cancel its whole tree.

Free of Slicer and Qt: the panel polls :meth:`ProcessRunner.read_lines` from a timer, tests and
``Slicer --testing`` wait on it in a loop. The process starts in its own session (POSIX) or process
group (Windows), so cancelling ends the Python process and every worker it started.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "ProcessRunner",
    "error_message",
    "is_progress_bar",
    "parse_progress",
]

ERROR_PREFIX = "monai-gnerf: error:"
_COUNT = re.compile(r"\[(\d+)/(\d+)\]")  # Ignite progress bar: "Iteration: [20/1500]"
_PERCENT = re.compile(r"(\d{1,3})%\|")  # tqdm progress bar: "DRR (joseph):  12%|##  | 1/8"
_TQDM_COUNT = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")  # tqdm: "| 1/8 ["
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?")
_WINDOWS = sys.platform.startswith("win")


def parse_progress(line: str) -> float | None:
    """The completed fraction announced by a progress-bar line, or ``None`` when it announces none."""
    for pattern in (_COUNT, _TQDM_COUNT):
        match = pattern.search(line)
        if match and int(match.group(2)) > 0:
            return min(1.0, int(match.group(1)) / int(match.group(2)))
    match = _PERCENT.search(line)
    if match:
        return min(1.0, int(match.group(1)) / 100.0)
    return None


def is_progress_bar(line: str) -> bool:
    """Whether a line is a progress-bar redraw (shown as status, not kept in the log)."""
    return bool(_PERCENT.search(line) or (_COUNT.search(line) and "%|" in line) or _COUNT.match(line.strip()))


def error_message(lines: Sequence[str], returncode: int | None = None) -> str:
    """The message to show when a process failed: its one-line user error, else the last exception line.

    Args:
        lines: the process's output lines (stderr, or stdout and stderr interleaved), oldest first.
        returncode: the exit status, quoted when nothing better is found.
    """
    texts = [line.strip() for line in lines if line.strip() and not is_progress_bar(line)]
    for text in reversed(texts):
        if text.startswith(ERROR_PREFIX):
            return text[len(ERROR_PREFIX) :].strip()
    for text in reversed(texts):
        if _EXCEPTION.match(text):
            return text
    if texts:
        return texts[-1]
    return f"the process ended with status {returncode} without a message."


def _split_lines(buffer: str) -> tuple[list[str], str]:
    """Complete lines of ``buffer`` (ended by ``\\n`` or a progress bar's ``\\r``) and the unfinished rest."""
    parts = re.split(r"\r\n|\r|\n", buffer)
    return parts[:-1], parts[-1]


class ProcessRunner:
    """One command in a separate process whose output lines are collected by reader threads.

    Args:
        args: the command and its arguments.
        env: the environment (default: this process's); ``PYTHONUNBUFFERED=1`` and
            ``PYTHONIOENCODING=utf-8`` are added unless set.
        cwd: working folder.
        log_path: if given, every output line is appended to this file too.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")  # lines as they come, not when a buffer fills
        self.env.setdefault("PYTHONIOENCODING", "utf-8")  # progress bars print Unicode into the pipe (Windows)
        self.cwd = None if cwd is None else str(cwd)
        self.log_path = None if log_path is None else Path(log_path)
        self.stderr_lines: deque[str] = deque(maxlen=2000)  # without progress-bar redraws
        self.cancelled = False
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ life cycle
    def start(self) -> ProcessRunner:
        """Start the process in its own session / process group; returns ``self``."""
        options: dict = {"start_new_session": True}
        if _WINDOWS:
            flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
            options = {"creationflags": flags}
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            **options,
        )
        for name, pipe in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
            thread = threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def pid(self) -> int | None:
        """Process id, once started."""
        return None if self._process is None else self._process.pid

    def poll(self) -> int | None:
        """Exit status, or ``None`` while running (or before the output is fully read)."""
        if self._process is None or self._process.poll() is None:
            return None
        if any(t.is_alive() for t in self._threads):
            return None
        return self._process.returncode

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait until the process ended and its output was read; the exit status, or ``None`` on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return self.poll()

    def cancel(self, grace_s: float = 3.0) -> None:
        """End the process and all its children: terminate, then kill what is left after ``grace_s``."""
        self.cancelled = True
        if self._process is None:
            return
        if _WINDOWS:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True, check=False)
        else:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(signal.SIGKILL)  # children that ignored SIGTERM or outlived their parent
        self._process.wait()
        for thread in self._threads:  # the readers reach end-of-file once the process tree is gone
            thread.join(timeout=grace_s)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._process.pid, sig)  # type: ignore[union-attr]
        except (ProcessLookupError, PermissionError):
            pass

    # ------------------------------------------------------------------ output
    def read_lines(self) -> list[tuple[str, str]]:
        """Lines printed since the last call, as ``(stream, line)`` with stream ``stdout`` or ``stderr``."""
        lines = []
        while True:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                return lines

    def _read(self, name: str, pipe: IO[bytes]) -> None:
        rest = ""
        log = self.log_path.open("a", encoding="utf-8") if self.log_path else None
        try:
            while True:
                chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
                if not chunk:
                    break
                lines, rest = _split_lines(rest + chunk.decode("utf-8", errors="replace"))
                self._publish(name, lines, log)
            if rest:
                self._publish(name, [rest], log)
        finally:
            pipe.close()
            if log is not None:
                log.close()

    def _publish(self, name: str, lines: list[str], log: IO[str] | None) -> None:
        for line in lines:
            if not line.strip():
                continue
            if name == "stderr" and not is_progress_bar(line):
                self.stderr_lines.append(line)
            self._queue.put((name, line))
            if log is not None:
                log.write(f"{line}\n")
