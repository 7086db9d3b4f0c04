"""Shared training handlers: budget progress, and Ctrl-C through Ignite's EXCEPTION_RAISED leaving a resumable checkpoint."""

from __future__ import annotations

import re
import time

import pytest
import torch

from ignite.engine import Engine

from monai_gnerf.engines import RunState, attach_training_handlers, latest_checkpoint, run_engine
from monai_gnerf.errors import GnerfInputError


def test_budget_runs_show_time_against_the_budget(capsys):
    def step(engine, _):
        time.sleep(0.05)
        return {"loss": 1.0 / engine.state.iteration}

    engine = Engine(step)
    run = RunState({"kind": "test"})
    attach_training_handlers(engine, {"run": run}, prefix="t", max_iterations=10_000, log_every=10_000,
                             checkpoint_every=10_000, budget_s=1.0, work_dir=None, tensorboard_dir=None,
                             progress=True, logger="test")  # fmt: skip
    run_engine(engine, 10_000)
    err = capsys.readouterr().err
    fractions = [(int(n), int(total)) for n, total in re.findall(r"time \(s\) \[(\d+)/(\d+)\]", err)]
    assert fractions and fractions[-1] == (1, 1)  # the bar ends at the budget, in the [done/total] form
    assert 10 < engine.state.iteration < 30 and f"iteration {engine.state.iteration}" in err


def _counting_engine(weights: torch.nn.Parameter, interrupt_at: int | None) -> Engine:
    def step(engine, _):
        if engine.state.iteration == interrupt_at:
            raise KeyboardInterrupt  # what Ctrl-C raises inside the step
        with torch.no_grad():
            weights.add_(1.0)
        return {"loss": float(weights.detach().sum())}

    return Engine(step)


def _attach(engine: Engine, weights: torch.nn.Parameter, work) -> RunState:
    run = RunState({"kind": "count"})
    module = torch.nn.ParameterList([weights])
    attach_training_handlers(engine, {"weights": module, "run": run}, prefix="count", max_iterations=10, log_every=100,
                             checkpoint_every=100, budget_s=None, work_dir=work, tensorboard_dir=None,
                             progress=False, logger="test")  # fmt: skip
    return run


def test_ctrl_c_saves_a_checkpoint_through_exception_raised_and_the_run_resumes_there(tmp_path):
    weights = torch.nn.Parameter(torch.zeros(3))
    engine = _counting_engine(weights, interrupt_at=4)
    _attach(engine, weights, tmp_path)
    with pytest.raises(KeyboardInterrupt):  # the program still stops as asked
        run_engine(engine, 10)
    saved = latest_checkpoint(tmp_path, "count")
    assert saved is not None and saved.name == "count_checkpoint_4.pt"  # 3 steps done, the 4th interrupted
    state = torch.load(saved, weights_only=True)
    assert state["run"]["iteration"] == 4 and torch.equal(state["weights"]["0"], torch.full((3,), 3.0))
    resumed_weights = torch.nn.Parameter(torch.zeros(3))
    resumed = _counting_engine(resumed_weights, interrupt_at=None)
    _attach(resumed, resumed_weights, tmp_path)
    assert resumed.state.iteration == 4
    run_engine(resumed, 10)
    assert resumed.state.iteration == 10 and torch.equal(resumed_weights.detach(), torch.full((3,), 9.0))
    assert latest_checkpoint(tmp_path, "count").name == "count_checkpoint_10.pt"


def test_a_finished_run_resumed_with_a_larger_budget_continues_from_its_end(tmp_path):
    weights = torch.nn.Parameter(torch.zeros(1))
    engine = _counting_engine(weights, interrupt_at=None)
    _attach(engine, weights, tmp_path)
    run_engine(engine, 10)
    more_weights = torch.nn.Parameter(torch.zeros(1))
    more = _counting_engine(more_weights, interrupt_at=None)
    run = RunState({"kind": "count"})
    attach_training_handlers(more, {"weights": torch.nn.ParameterList([more_weights]), "run": run}, prefix="count",
                             max_iterations=15, log_every=100, checkpoint_every=100, budget_s=None, work_dir=tmp_path,
                             tensorboard_dir=None, progress=False, logger="test")  # fmt: skip
    run_engine(more, 15)
    assert more.state.iteration == 15 and float(more_weights.detach()) == 15.0  # 10 + 5 more steps, not 15 from the start


def test_periodic_checkpoints_in_a_relative_folder_keep_the_newest_only(tmp_path, monkeypatch):
    """A relative work folder (as the CLI's ``--out outputs/...`` gives) must not delete the newest file."""
    monkeypatch.chdir(tmp_path)
    weights = torch.nn.Parameter(torch.zeros(1))
    engine = _counting_engine(weights, interrupt_at=None)
    attach_training_handlers(engine, {"weights": torch.nn.ParameterList([weights]), "run": RunState({"kind": "count"})},
                             prefix="count", max_iterations=10, log_every=100, checkpoint_every=3, budget_s=None,
                             work_dir="checkpoints", tensorboard_dir=None, progress=False, logger="test")  # fmt: skip
    run_engine(engine, 10)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["count_checkpoint_10.pt"]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), GnerfInputError("a bad input found mid-run")])
def test_an_error_in_a_step_is_left_to_the_program_to_report(error, tmp_path, caplog):
    """Without a work folder nothing saves on Ctrl-C; MONAI's StatsHandler would log the error with
    its traceback and Ignite its "terminating" line before the program's own one line."""

    def step(engine, _):
        if engine.state.iteration == 3:
            raise error
        return {"loss": 1.0}

    engine = Engine(step)
    attach_training_handlers(engine, {"run": RunState({"kind": "t"})}, prefix="t", max_iterations=10, log_every=1,
                             checkpoint_every=10, budget_s=None, work_dir=None, tensorboard_dir=None,
                             progress=False, logger="test")  # fmt: skip
    with caplog.at_level("INFO"), pytest.raises(type(error)):
        run_engine(engine, 10)
    assert "Traceback" not in caplog.text and "Exception" not in caplog.text and "terminating" not in caplog.text
