"""Ignite handlers shared by the iterative workflows (sparse-view fitting, generative prior training).

Each is a plain handler with ``attach(engine)``, so the library's runners and the MONAI bundle's
``train#handlers`` compose the same objects:

* :class:`RunState`: a run's identity (a signature dict), its elapsed wall time across resumes
  and its iteration; checkpointed with the networks, it refuses a checkpoint of another run.
* :class:`WallTimeBudget`: stops the run when its wall-time budget (across resumes) is spent.
* :class:`RunProgress`: a progress bar over the budget (its ETA the time left) or the iterations.
* :class:`IterationCheckpoint`: an Ignite ``Checkpoint`` every N iterations, at completion and
  on Ctrl-C (Ignite's ``EXCEPTION_RAISED`` event); writes are atomic and Ctrl-C waits for them.
* :class:`NewestCheckpointResume`: resumes from the newest checkpoint of the same run in a folder.
* :class:`StopOnNan`: Ignite's ``TerminateOnNan`` with the ``attach`` a MONAI workflow calls.

Why not MONAI's ``CheckpointSaver`` / ``CheckpointLoader`` for training: ``CheckpointSaver``
writes with ``DiskSaver(atomic=False)``, so a Ctrl-C or a full disk during a save leaves a
truncated newest file; ``CheckpointLoader`` needs the file name, where a resumed run wants the
newest of its folder, and knows no run identity; neither counts a wall-time budget across resumes.
Inference loads its weights with ``CheckpointLoader`` (``bundle/configs/inference.json``).

:func:`attach_training_handlers` attaches the usual set (with MONAI's ``StatsHandler`` and
``TensorBoardStatsHandler``); :func:`run_engine` runs an engine to its iteration budget.
Checkpoints are plain state dicts loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar, TerminateOnNan
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from monai_gnerf.errors import ErrorsReportedOnce, first_line, GnerfInputError
from monai_gnerf.io.checkpoints import load_checkpoint_file
from monai_gnerf.progress import bar_interval_s, progress_bar

__all__ = [
    "RunState",
    "WallTimeBudget",
    "RunProgress",
    "IterationCheckpoint",
    "NewestCheckpointResume",
    "StopOnNan",
    "latest_checkpoint",
    "attach_training_handlers",
    "training_handlers",
    "run_engine",
    "step_stats",
    "every_and_at_end",
]


class RunState:
    """Checkpointed run identity, elapsed time and iteration.

    Attached to an engine, its state dict records the engine's iteration and loading one restores
    it, so a checkpoint needs no engine object (the bundle's ``save_dict`` cannot hold the trainer
    whose handlers it feeds).

    Args:
        signature: JSON-ready values that must match for a checkpoint to be resumed.
    """

    def __init__(self, signature: dict[str, Any]) -> None:
        self.signature = dict(signature)
        self.elapsed_before = 0.0
        self.started = time.perf_counter()
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Follow ``engine``'s iteration (saved and restored with this state)."""
        self.engine = engine

    @property
    def elapsed_s(self) -> float:
        """Wall time of the run so far, across resumes, seconds."""
        return self.elapsed_before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        iteration = 0 if self.engine is None else self.engine.state.iteration
        return {**self.signature, "elapsed_s": self.elapsed_s, "iteration": iteration}

    def differences(self, state: dict[str, Any]) -> list[str]:
        """The signature keys whose values differ in a checkpoint's ``state``."""
        return [k for k, v in self.signature.items() if state.get(k) != v]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differing = self.differences(state)
        if differing:
            raise GnerfInputError(f"incompatible checkpoint: different {', '.join(differing)} from this run's.")
        self.elapsed_before = float(state["elapsed_s"])
        self.started = time.perf_counter()
        if self.engine is not None:
            self.engine.state.iteration = int(state.get("iteration", 0))


class WallTimeBudget:
    """Terminate a run once its :class:`RunState` has spent ``budget_s`` seconds (across resumes).

    In a distributed run every rank stops at the same iteration (the decision is OR-ed over ranks).

    Args:
        run: the run's state (its elapsed time).
        budget_s: wall-time budget in seconds; ``None``: no budget (nothing is attached).
    """

    def __init__(self, run: RunState, budget_s: float | None) -> None:
        self.run, self.budget_s = run, budget_s

    def attach(self, engine: Engine) -> None:
        if self.budget_s is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if _any_rank(self.run.elapsed_s >= self.budget_s):
            engine.terminate()


class RunProgress:
    """A progress bar: over the wall-time budget when there is one (its ETA is the time left,
    iterations and loss beside it), else Ignite's bar over the iterations.

    The budget bar reads ``time (s) [elapsed/budget]``, the ``[n/total]`` form of iteration
    bars, so a caller parsing either sees the fraction done. Only the main process shows it.

    Args:
        run: the run's state (its elapsed time).
        budget_s: wall-time budget in seconds, or ``None``.
    """

    def __init__(self, run: RunState, budget_s: float | None = None) -> None:
        self.run, self.budget_s = run, budget_s
        self._bar: Any = None  # made at the first iteration, so a resumed run's ETA counts from its own start

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        if self.budget_s is None:
            ProgressBar(persist=True, mininterval=bar_interval_s()).attach(engine, output_transform=_loss_of)
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._advance)
        engine.add_event_handler(Events.COMPLETED | Events.TERMINATE | Events.EXCEPTION_RAISED, self._close)

    def _advance(self, engine: Engine) -> None:
        done = min(round(self.run.elapsed_s), round(self.budget_s))
        if self._bar is None:
            bar_format = "{desc} [{n}/{total}] {bar} {elapsed}<{remaining}{postfix}"
            self._bar = progress_bar(total=round(self.budget_s), initial=done, desc="time (s)", bar_format=bar_format)
        self._bar.update(done - self._bar.n)
        loss = _loss_of(engine.state.output).get("loss")
        postfix = f"iteration {engine.state.iteration}" + ("" if loss is None else f", loss {loss:.4g}")
        self._bar.set_postfix_str(postfix, refresh=False)  # redrawn at the bar's interval (30 s in logs), not each step

    def _close(self, *_: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def every_and_at_end(engine: Engine, every: int, handler: Callable[[Engine], None]) -> None:
    """Call ``handler(engine)`` every ``every`` iterations and when the run ends, once per iteration
    (Ignite fires both events when the last iteration is a multiple of ``every``)."""
    last = [-1]

    def once(e: Engine) -> None:
        if e.state.iteration != last[0]:
            last[0] = e.state.iteration
            handler(e)

    engine.add_event_handler(Events.ITERATION_COMPLETED(every=every) | Events.COMPLETED, once)


def step_stats(output: Any) -> dict[str, float]:
    """The statistics of a training step's output: the dict itself, or the one dict of MONAI's
    decollated form ``[{...}]`` (:class:`~monai_gnerf.engines.PriorTrainer`); ``{}`` otherwise."""
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    return output if isinstance(output, dict) else {}


def _loss_of(output: Any) -> dict[str, float]:
    stats = step_stats(output)
    return {"loss": stats["loss"]} if "loss" in stats else {}


def latest_checkpoint(work_dir: str | Path, prefix: str) -> Path | None:
    """The newest ``<prefix>_checkpoint_<iteration>.pt`` in a folder, by iteration (other names are ignored)."""
    found = _checkpoints(work_dir, prefix)
    return max(found, key=lambda p: int(p.stem.rsplit("_", 1)[-1])) if found else None


def _checkpoints(work_dir: str | Path, prefix: str) -> list[Path]:
    return [p for p in Path(work_dir).glob(f"{prefix}_checkpoint_*.pt") if p.stem.rsplit("_", 1)[-1].isdigit()]


def _any_rank(flag: bool) -> bool:
    """``flag`` OR-ed over the ranks of a distributed run (so all ranks stop together)."""
    if idist.get_world_size() == 1:
        return flag
    return bool(idist.all_reduce(torch.tensor([float(flag)]), op="MAX").item() > 0)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, then raise it: a checkpoint is never half written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class IterationCheckpoint:
    """Checkpoint ``to_save`` every ``every`` iterations, at completion and on Ctrl-C.

    The newest checkpoint only is kept, as ``<work_dir>/<prefix>_checkpoint_<iteration>.pt``,
    written atomically (Ignite's ``DiskSaver``) while Ctrl-C waits. A Ctrl-C reaches Ignite's
    ``EXCEPTION_RAISED`` event as ``KeyboardInterrupt``: the handler saves, logs and raises it
    again, so the program still stops as asked (attach it before handlers that re-raise, such as
    MONAI's ``StatsHandler``). Only the main process of a distributed run saves.

    Args:
        to_save: objects with state dicts; must include ``"run"`` (a :class:`RunState`).
        work_dir: checkpoint folder (made when needed).
        prefix: file name prefix.
        every: iterations between checkpoints.
        logger: logger name for the interruption message.
    """

    def __init__(self, to_save: dict[str, Any], work_dir: str | Path, prefix: str, every: int, logger: str = __name__) -> None:
        self.checkpoint = Checkpoint(
            to_save, DiskSaver(str(work_dir), require_empty=False, create_dir=True), filename_prefix=prefix,
            n_saved=1, global_step_transform=lambda engine, _: engine.state.iteration,
        )  # fmt: skip
        self.work_dir, self.prefix, self.every, self.logger = Path(work_dir), prefix, every, logger

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        every_and_at_end(engine, self.every, self.save)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._interrupted)

    def save(self, engine: Engine) -> None:
        """Write a checkpoint of the current iteration now; older ones of the prefix (also those of
        an earlier process, which Ignite's ``Checkpoint`` does not track) are removed."""
        with _interrupts_deferred():
            self.checkpoint(engine)
            newest = Path(str(self.checkpoint.last_checkpoint)).name  # Ignite gives a path or a bare name
            for older in _checkpoints(self.work_dir, self.prefix):
                if older.name != newest:
                    older.unlink()

    def _interrupted(self, engine: Engine, error: BaseException) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.save(engine)
            logging.getLogger(self.logger).warning(f"interrupted: checkpoint saved at iteration {engine.state.iteration}")
        raise error


class NewestCheckpointResume:
    """Resume a run from the newest checkpoint of the same run in ``work_dir``, when attached.

    Loading at attach time (not at ``STARTED``) lets a finished run be recognised before it is run
    again. A checkpoint of another run (a different :class:`RunState` signature) is refused with
    one line, or with ``restart`` discarded with all the folder's checkpoints of ``prefix``.

    Args:
        to_load: the objects of :class:`IterationCheckpoint`'s ``to_save``.
        work_dir: checkpoint folder.
        prefix: file name prefix.
        max_iterations: the run's iteration budget (a resumed run may have a new one).
        restart: discard checkpoints of another run instead of refusing them.
        logger: logger name for the resume message.
    """

    def __init__(
        self, to_load: dict[str, Any], work_dir: str | Path, prefix: str, max_iterations: int, restart: bool = False,
        logger: str = __name__,
    ) -> None:  # fmt: skip
        self.to_load, self.work_dir, self.prefix = to_load, Path(work_dir), prefix
        self.max_iterations, self.restart, self.logger = max_iterations, restart, logger

    def attach(self, engine: Engine) -> None:
        self.to_load["run"].attach(engine)
        found = latest_checkpoint(self.work_dir, self.prefix)
        if found is None:
            return
        state, unusable = self._read(found)
        if unusable and not self.restart:
            raise GnerfInputError(f"{unusable}; use another work folder, or --overwrite to discard it and start afresh.")
        if unusable:
            for stale in _checkpoints(self.work_dir, self.prefix):
                stale.unlink()
            logging.getLogger(self.logger).warning(f"discarded the checkpoints in {self.work_dir}: {unusable}")
            return
        try:
            Checkpoint.load_objects(to_load=self.to_load, checkpoint=state)
        except (RuntimeError, KeyError, ValueError) as err:
            raise GnerfInputError(f"incompatible checkpoint {found}: {first_line(err)}") from None
        s = engine.state
        s.max_epochs, s.epoch_length = 1, self.max_iterations  # one epoch of the (new) iteration budget
        s.epoch = s.iteration // self.max_iterations
        logging.getLogger(self.logger).info(f"resumed from {found} at iteration {s.iteration}")

    def _read(self, found: Path) -> tuple[dict[str, Any] | None, str]:
        """The checkpoint's content, or why this run cannot resume from it (unreadable, not a
        checkpoint of ``prefix``, or one of another run)."""
        try:
            state = load_checkpoint_file(found)
        except GnerfInputError as err:
            return None, str(err).rstrip(".")
        if not isinstance(state, dict) or not isinstance(state.get("run"), dict):
            return None, f"{found} is not a monai-gnerf {self.prefix} checkpoint"
        differing = self.to_load["run"].differences(state["run"])
        if differing:
            return None, f"{self.work_dir} holds a checkpoint of another run (different {', '.join(differing)})"
        return state, ""


class StopOnNan(TerminateOnNan):
    """Ignite's ``TerminateOnNan`` (stop when a step's output holds NaN or infinity), attachable by
    a MONAI workflow's ``handlers`` list (which calls ``handler.attach(engine)``)."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)


def attach_training_handlers(
    engine: Engine,
    to_save: dict[str, Any],
    *,
    prefix: str,
    max_iterations: int,
    log_every: int,
    checkpoint_every: int,
    budget_s: float | None,
    work_dir: str | Path | None,
    tensorboard_dir: str | Path | None,
    progress: bool,
    logger: str,
    restart: bool = False,
) -> None:
    """Attach the usual handlers to a training engine and resume it.

    In order: the run state, the budget, the checkpoint and resume (with a ``work_dir``),
    :class:`~monai_gnerf.errors.ErrorsReportedOnce`, MONAI's ``StatsHandler`` and
    ``TensorBoardStatsHandler`` (with a ``tensorboard_dir``) and the progress bar (with
    ``progress``); the stats and bar only on the main process of a distributed run.

    Args:
        engine: engine whose step returns a dict of floats, or MONAI's ``[{...}]`` (see
            :func:`step_stats`; ``"loss"`` is shown on the progress bar).
        to_save: objects to checkpoint; must include ``"run"`` (a :class:`RunState`).
        prefix: checkpoint file prefix (``<prefix>_checkpoint_<iteration>.pt``).
        max_iterations: iteration budget (kept when resuming with a new budget).
        log_every: iterations between stdout/TensorBoard log lines.
        checkpoint_every: iterations between checkpoints (and one at completion and on Ctrl-C).
        budget_s: wall-time budget in seconds across resumes, or ``None``.
        work_dir: checkpoint folder; ``None`` disables checkpoints and resume.
        tensorboard_dir: TensorBoard log folder or ``None``.
        progress: show a progress bar.
        logger: logger name for the stats handler.
        restart: discard checkpoints of another run (other inputs) in ``work_dir`` instead of
            refusing them.
    """
    for handler in training_handlers(to_save, prefix=prefix, max_iterations=max_iterations, log_every=log_every,
                                     checkpoint_every=checkpoint_every, budget_s=budget_s, work_dir=work_dir,
                                     tensorboard_dir=tensorboard_dir, progress=progress, logger=logger,
                                     restart=restart):  # fmt: skip
        handler.attach(engine)


def training_handlers(
    to_save: dict[str, Any], *, prefix: str, max_iterations: int, log_every: int, checkpoint_every: int,
    budget_s: float | None, work_dir: str | Path | None, tensorboard_dir: str | Path | None, progress: bool,
    logger: str, restart: bool = False,
) -> list[Any]:  # fmt: skip
    """The handlers of :func:`attach_training_handlers`, in attach order (for a MONAI workflow's ``handlers``)."""
    run: RunState = to_save["run"]
    handlers: list[Any] = [run, WallTimeBudget(run, budget_s)]
    if progress:  # first of the exception handlers: the bar is closed before an error line is printed
        handlers.append(RunProgress(run, budget_s))
    if work_dir is not None:
        handlers += [
            IterationCheckpoint(to_save, work_dir, prefix, checkpoint_every, logger),
            NewestCheckpointResume(to_save, work_dir, prefix, max_iterations, restart, logger),
        ]
    handlers.append(ErrorsReportedOnce())  # after the checkpoint's Ctrl-C save, before the stats' traceback log
    if idist.get_rank() == 0:
        handlers.append(StatsHandler(iteration_log=lambda _, i: i % log_every == 0, epoch_log=False,
                                     output_transform=step_stats, name=logger))  # fmt: skip
        if tensorboard_dir is not None:
            handlers.append(TensorBoardStatsHandler(log_dir=str(tensorboard_dir), iteration_log=log_every,
                                                    epoch_log=False, output_transform=step_stats))  # fmt: skip
    return handlers


def run_engine(engine: Engine, max_iterations: int) -> None:
    """Run a plain Ignite engine to ``max_iterations`` (a finished, resumed run is not run again)."""
    if engine.state.iteration < max_iterations:
        engine.run(data=None, max_epochs=1, epoch_length=max_iterations)
