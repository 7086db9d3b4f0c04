"""Shared Ignite plumbing for iterative workflows (sparse-view fitting, generative prior training).

* :class:`RunState`: a run's identity (a signature dict) and elapsed wall time, checkpointed with
  the networks; refuses to resume a checkpoint made by a different run.
* :func:`attach_training_handlers`: MONAI ``StatsHandler`` (stdout) and optional
  ``TensorBoardStatsHandler``, Ignite ``ProgressBar``, a wall-time budget, periodic checkpoints
  (``Checkpoint`` + ``DiskSaver``, the newest kept) and resume from the newest checkpoint.
* :func:`run_engine`: runs to an iteration budget, saving a checkpoint on Ctrl-C before stopping.

Checkpoints are plain state dicts loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from monai_gnerf.errors import first_line, GnerfInputError
from monai_gnerf.io.checkpoints import load_checkpoint_file
from monai_gnerf.progress import bar_interval_s, progress_bar

__all__ = ["RunState", "latest_checkpoint", "attach_training_handlers", "run_engine"]


class RunState:
    """Checkpointed run identity and elapsed time.

    Args:
        signature: JSON-ready values that must match for a checkpoint to be resumed.
    """

    def __init__(self, signature: dict[str, Any]) -> None:
        self.signature = dict(signature)
        self.elapsed_before = 0.0
        self.started = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Wall time of the run so far, across resumes, seconds."""
        return self.elapsed_before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {**self.signature, "elapsed_s": self.elapsed_s}

    def differences(self, state: dict[str, Any]) -> list[str]:
        """The signature keys whose values differ in a checkpoint's ``state``."""
        return [k for k, v in self.signature.items() if state.get(k) != v]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differing = self.differences(state)
        if differing:
            raise GnerfInputError(f"incompatible checkpoint: different {', '.join(differing)} from this run's.")
        self.elapsed_before = float(state["elapsed_s"])
        self.started = time.perf_counter()


def latest_checkpoint(work_dir: str | Path, prefix: str) -> Path | None:
    """The newest ``<prefix>_checkpoint_<iteration>.pt`` in a folder, by iteration (other names are ignored)."""
    found = _checkpoints(work_dir, prefix)
    return max(found, key=lambda p: int(p.stem.rsplit("_", 1)[-1])) if found else None


def _checkpoints(work_dir: str | Path, prefix: str) -> list[Path]:
    return [p for p in Path(work_dir).glob(f"{prefix}_checkpoint_*.pt") if p.stem.rsplit("_", 1)[-1].isdigit()]


def _any_rank(flag: bool) -> bool:
    """``flag`` OR-ed over the ranks of a distributed run (so all ranks stop together)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([float(flag)])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _resume(
    engine: Engine, to_save: dict[str, Any], work_dir: Path, prefix: str, max_iterations: int, logger: str,
    restart: bool,
) -> None:
    """Resume from the newest checkpoint of the same run; one of other inputs is refused (or, with
    ``restart``, discarded with all its folder's checkpoints, and the run starts afresh)."""
    found = latest_checkpoint(work_dir, prefix)
    if found is None:
        return
    state = load_checkpoint_file(found)
    if not isinstance(state, dict) or not isinstance(state.get("run"), dict):
        raise GnerfInputError(f"{found} is not a monai-gnerf {prefix} checkpoint.")
    differing = to_save["run"].differences(state["run"])
    if differing and not restart:
        raise GnerfInputError(
            f"{work_dir} holds a checkpoint of another run (different {', '.join(differing)}); use another "
            "work folder, or --overwrite to discard it and start afresh."
        )
    if differing:
        for stale in _checkpoints(work_dir, prefix):
            stale.unlink()
        logging.getLogger(logger).warning(f"discarded the checkpoints of another run in {work_dir} (different {', '.join(differing)})")
        return
    to_save["run"].load_state_dict(state["run"])
    try:
        Checkpoint.load_objects(to_load=to_save, checkpoint=state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise GnerfInputError(f"incompatible checkpoint {found}: {first_line(err)}") from None
    engine.state.epoch_length = max_iterations  # a resumed run may have a new iteration budget
    logging.getLogger(logger).info(f"resumed from {found} at iteration {engine.state.iteration}")


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
    main_process: bool = True,
    restart: bool = False,
) -> Checkpoint | None:
    """Attach logging, progress, budget and checkpoint handlers to a training engine; resume.

    Args:
        engine: engine whose step returns a dict of floats (``"loss"`` shown on the progress bar).
        to_save: objects to checkpoint; must include ``"run"`` (a :class:`RunState`).
        prefix: checkpoint file prefix (``<prefix>_checkpoint_<iteration>.pt``).
        max_iterations: iteration budget (kept when resuming with a new budget).
        log_every: iterations between stdout/TensorBoard log lines.
        checkpoint_every: iterations between checkpoints (and one at completion).
        budget_s: wall-time budget in seconds across resumes, or ``None``.
        work_dir: checkpoint folder; ``None`` disables checkpoints and resume.
        tensorboard_dir: TensorBoard log folder or ``None``.
        progress: show an Ignite progress bar.
        logger: logger name for the stats handler.
        main_process: ``False`` on the other ranks of a distributed run: they resume from the
            same checkpoint but neither log nor save.
        restart: discard checkpoints of another run (other inputs) in ``work_dir`` instead of
            refusing them.

    Returns:
        The checkpoint handler, or ``None`` without a work folder.
    """
    run_state: RunState = to_save["run"]
    if budget_s is not None:

        @engine.on(Events.ITERATION_COMPLETED)
        def _stop_at_budget(e: Engine) -> None:
            if _any_rank(run_state.elapsed_s >= budget_s):
                e.terminate()

    if not main_process:
        if work_dir is not None:
            _resume(engine, to_save, Path(work_dir), prefix, max_iterations, logger, restart)
        return None
    StatsHandler(
        iteration_log=lambda _, i: i % log_every == 0, epoch_log=False, output_transform=lambda o: o, name=logger
    ).attach(engine)
    if tensorboard_dir is not None:
        TensorBoardStatsHandler(
            log_dir=str(tensorboard_dir), iteration_log=log_every, epoch_log=False, output_transform=lambda o: o
        ).attach(engine)
    if progress and budget_s is not None:
        _attach_budget_bar(engine, run_state, budget_s)
    elif progress:
        ProgressBar(persist=True, mininterval=bar_interval_s()).attach(engine, output_transform=lambda o: {"loss": o["loss"]})
    if work_dir is None:
        return None
    saver = Checkpoint(
        to_save,
        DiskSaver(str(work_dir), require_empty=False, create_dir=True),
        filename_prefix=prefix,
        n_saved=1,
        global_step_transform=lambda e, _: e.state.iteration,
    )
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=checkpoint_every) | Events.COMPLETED, _save, saver)
    _resume(engine, to_save, Path(work_dir), prefix, max_iterations, logger, restart)
    return saver


def _attach_budget_bar(engine: Engine, run_state: RunState, budget_s: float) -> None:
    """A progress bar over the wall-time budget (its ETA is the time left), iterations and loss beside it.

    It reads ``time [elapsed/budget]`` in seconds, the ``[n/total]`` form that iteration bars
    have, so a caller parsing either sees the fraction done.
    """
    bars: list = []  # made at the first iteration, so a resumed run's ETA counts from its own start

    @engine.on(Events.ITERATION_COMPLETED)
    def _advance(e: Engine) -> None:
        done = min(round(run_state.elapsed_s), round(budget_s))
        if not bars:
            bar_format = "{desc} [{n}/{total}] {bar} {elapsed}<{remaining}{postfix}"
            bars.append(progress_bar(total=round(budget_s), initial=done, desc="time (s)", bar_format=bar_format))
        bars[0].update(done - bars[0].n)
        loss = e.state.output.get("loss") if isinstance(e.state.output, dict) else None
        bars[0].set_postfix_str(f"iteration {e.state.iteration}" + ("" if loss is None else f", loss {loss:.4g}"))

    @engine.on(Events.COMPLETED | Events.TERMINATE | Events.EXCEPTION_RAISED)
    def _close(_: Engine) -> None:
        for bar in bars:
            bar.close()


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


def _save(engine: Engine, saver: Checkpoint) -> None:
    with _interrupts_deferred():
        saver(engine)


def run_engine(engine: Engine, max_iterations: int, saver: Checkpoint | None, logger: str) -> None:
    """Run to ``max_iterations`` (a finished, resumed run is not retrained); checkpoint on Ctrl-C."""
    try:
        if engine.state.iteration < max_iterations:
            engine.run(data=None, max_epochs=1, epoch_length=max_iterations)
    except KeyboardInterrupt:  # Ignite only handles Exception: save here, then stop as asked
        if saver is not None:
            _save(engine, saver)
            logging.getLogger(logger).warning(f"interrupted: checkpoint saved at iteration {engine.state.iteration}")
        raise
