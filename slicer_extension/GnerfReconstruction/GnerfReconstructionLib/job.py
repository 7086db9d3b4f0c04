"""A run as a state machine: its bundle processes one after the other, then the loading of the result.

Free of Slicer and Qt: what the processes are and how their output becomes nodes is the planner's
(:mod:`.logic`); the job starts the processes, forwards their output and progress, and ends as
``done``, ``failed`` or ``cancelled``. A failing process is reported by :class:`GnerfProcessError`
carrying the process's own one-line message (``monai-gnerf: error: ...``), not a traceback.
:meth:`ReconstructionJob.cancel` ends the whole process tree.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import ProcessRunner, error_message, is_progress_bar, parse_progress

__all__ = [
    "GnerfCancelled",
    "GnerfProcessError",
    "JobResult",
    "LogCallback",
    "ProgressCallback",
    "ReconstructionJob",
    "ResultLoader",
    "Step",
]

#: Receives each output line of the processes and the job's own messages.
LogCallback = Callable[[str], None]
#: Receives the completed fraction of the whole run and the status text.
ProgressCallback = Callable[[float, str], None]
#: Loads what the processes wrote: the volume node and the views node (or ``None``).
ResultLoader = Callable[[], tuple[Any, Any]]


class GnerfProcessError(RuntimeError):
    """The bundle process failed; ``str(err)`` is the process's own message."""

    def __init__(self, message: str, log_lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log_lines = list(log_lines)


class GnerfCancelled(RuntimeError):
    """The user cancelled the run."""


@dataclass
class Step:
    """One bundle process of a run.

    Attributes:
        name: what the step does, shown in the status line.
        args: the command, or a function returning it when the step starts (when it depends on
            what an earlier step wrote).
        weight: its share of the progress bar.
        budget_s: wall-time budget; once the step reports its first iteration, progress also advances
            with the elapsed time over the budget.
    """

    name: str
    args: list[str] | Callable[[], list[str]]
    weight: float = 1.0
    budget_s: float | None = None


@dataclass
class JobResult:
    """What a finished run added to the scene.

    Attributes:
        volume_node: the reconstructed volume (HU).
        views_node: simulated X-rays or rendered views as a projection stack, if any.
        work_dir: the temporary folder (deleted unless kept).
        seconds: wall time of the run.
    """

    volume_node: Any
    views_node: Any = None
    work_dir: Path | None = None
    seconds: float = 0.0


class ReconstructionJob:
    """A run in progress: its bundle processes, one after the other, then the loading of the result.

    Call :meth:`poll` regularly (the panel uses a timer; ``GnerfReconstructionLogicCore.run`` a
    loop): it starts the next process, forwards output lines and progress to the callbacks and,
    at the end, loads the result. ``state`` is ``running``, ``done``, ``failed`` or ``cancelled``.

    Args:
        steps: the processes to run, in order.
        load_result: called once all steps succeeded; raises ``OSError`` or
            :class:`GnerfProcessError` when the output cannot be loaded.
        work_dir: the run's temporary folder (``log.txt`` goes there); deleted at the end unless kept.
        env: environment of the processes (default: this process's).
        keep_temp: keep ``work_dir`` at the end.
        on_log: receives the output lines.
        on_progress: receives the progress.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        load_result: ResultLoader,
        work_dir: Path,
        env: dict[str, str] | None,
        keep_temp: bool,
        on_log: LogCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.steps = list(steps)
        self.load_result = load_result
        self.work_dir = work_dir
        self.env = env
        self.keep_temp = keep_temp
        self.on_log = on_log or (lambda line: None)
        self.on_progress = on_progress or (lambda fraction, text: None)
        self.state = "running"
        self.error = ""
        self.result: JobResult | None = None
        self.log_lines: list[str] = []
        self._index = -1
        self._runner: ProcessRunner | None = None
        self._clock: float | None = None  # when the current step reported its first progress
        self._step_fraction = 0.0
        self._shown: tuple[float, str] = (-1.0, "")
        self._started = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the job still runs."""
        return self.state == "running"

    @property
    def progress(self) -> float:
        """Completed fraction of the whole run."""
        steps = self.steps
        total = sum(s.weight for s in steps) or 1.0
        done = sum(s.weight for s in steps[: max(self._index, 0)])
        current = steps[self._index].weight * self._step_fraction if 0 <= self._index < len(steps) else 0.0
        return min(1.0, (done + current) / total)

    def poll(self) -> bool:
        """Advance the job; returns whether it is still running."""
        if not self.running:
            return False
        if self._runner is None:
            self._start_next()
            return self.running
        self._forward_output()
        status = self._runner.poll()
        if status is None:
            self._update_time_progress()
            return True
        self._forward_output()
        if status != 0:
            self._fail(error_message(self._runner.stderr_lines or self.log_lines, status))
            return False
        self._runner = None
        self._start_next()
        return self.running

    def cancel(self) -> None:
        """Stop the running process and all its children; the job ends as ``cancelled``."""
        if not self.running:
            return
        if self._runner is not None:
            self._runner.cancel()
        self.state = "cancelled"
        self._log("cancelled by the user.")
        self._cleanup()

    # ------------------------------------------------------------------ internals
    def _start_next(self) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self._finish()
            return
        step = self.steps[self._index]
        self._step_fraction = 0.0
        self._clock = None
        try:
            args = step.args() if callable(step.args) else step.args
        except GnerfProcessError as err:
            self._fail(str(err))
            return
        self._log(f"[{step.name}] {' '.join(args)}")
        self._show_progress(step.name)
        try:
            self._runner = ProcessRunner(args, env=self.env, log_path=self.work_dir / "log.txt").start()
        except OSError as err:
            self._fail(f"cannot start {args[0]}: {err.strerror or err}")

    def _forward_output(self) -> None:
        step = self.steps[self._index]
        for _, line in self._runner.read_lines():  # type: ignore[union-attr]
            fraction = parse_progress(line)
            if fraction is not None:
                self._clock = self._clock or time.monotonic()
                self._step_fraction = max(self._step_fraction, min(fraction, 0.99))
            if is_progress_bar(line):
                self._show_progress(f"{step.name}: {line.strip()[:100]}")
            else:
                self._log(line)

    def _update_time_progress(self) -> None:
        step = self.steps[self._index]
        if step.budget_s and self._clock is not None:
            elapsed = time.monotonic() - self._clock
            self._step_fraction = max(self._step_fraction, min(elapsed / step.budget_s, 0.99))
        self._show_progress(self._shown[1] or step.name)

    def _show_progress(self, text: str) -> None:
        """Report progress when it changed visibly (progress bars redraw many times a second)."""
        shown = (round(self.progress, 3), text)
        if shown != self._shown:
            self._shown = shown
            self.on_progress(*shown)

    def _finish(self) -> None:
        try:
            volume, views = self.load_result()
        except (OSError, GnerfProcessError) as err:
            self._fail(f"the bundle ran but its output could not be loaded: {err}")
            return
        self.result = JobResult(volume, views, self.work_dir, time.monotonic() - self._started)
        self.state = "done"
        self._log(f"done in {self.result.seconds:.0f} s: {volume.GetName()}")
        self._show_progress("done")
        self._cleanup()

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self._log(f"error: {message}")
        self._cleanup()

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        self.on_log(line)

    def _cleanup(self) -> None:
        if self.keep_temp:
            self._log(f"temporary folder kept: {self.work_dir}")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)
