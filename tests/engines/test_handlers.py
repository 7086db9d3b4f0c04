"""Shared training handlers: a budget-limited run shows its progress against the wall-time budget."""

from __future__ import annotations

import re
import time

from ignite.engine import Engine

from monai_gnerf.engines import RunState, attach_training_handlers, run_engine


def test_budget_runs_show_time_against_the_budget(capsys):
    def step(engine, _):
        time.sleep(0.05)
        return {"loss": 1.0 / engine.state.iteration}

    engine = Engine(step)
    run = RunState({"kind": "test"})
    attach_training_handlers(engine, {"run": run}, prefix="t", max_iterations=10_000, log_every=10_000,
                             checkpoint_every=10_000, budget_s=1.0, work_dir=None, tensorboard_dir=None,
                             progress=True, logger="test")  # fmt: skip
    run_engine(engine, 10_000, None, "test")
    err = capsys.readouterr().err
    fractions = [(int(n), int(total)) for n, total in re.findall(r"time \(s\) \[(\d+)/(\d+)\]", err)]
    assert fractions and fractions[-1] == (1, 1)  # the bar ends at the budget, in the [done/total] form
    assert 10 < engine.state.iteration < 30 and f"iteration {engine.state.iteration}" in err
