"""Learning-rate schedule: warm-up, cosine over the steps, and cosine over the wall-clock budget."""

import pytest
import torch

from mtmedformer.config.loader import FieldError
from mtmedformer.config.train import TrainConfig
from mtmedformer.engine.optim import build_scheduler


class _Clock:
    """A settable clock in seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lrs(cfg: TrainConfig, total_steps: int, clock: _Clock, seconds_per_step: float, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, total_steps, clock=clock)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        clock.now += seconds_per_step
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_cosine_over_epochs_ignores_the_clock():
    # Prepare: 100 steps planned, each "taking" a minute of a 10-minute budget
    cfg = TrainConfig(lr=1.0, warmup_steps=0, max_minutes=10)
    # Execute
    lrs = _lrs(cfg, 100, _Clock(), 60.0, 50)
    # Assert: half-way through the steps the lr is half the peak, whatever the clock says
    assert lrs[49] == pytest.approx(0.5, abs=1e-6)


def test_cosine_over_the_budget_reaches_zero_when_time_runs_out():
    # Prepare: 1000 steps planned, 1 s each, 1-minute budget: time ends the schedule long before the steps
    cfg = TrainConfig(lr=1.0, warmup_steps=0, max_minutes=1, schedule_over="budget")
    # Execute
    lrs = _lrs(cfg, 1000, _Clock(), 1.0, 61)
    # Assert: half the budget spent -> half the peak (cosine), all of it -> 0 (and it stays there)
    assert lrs[29] == pytest.approx(0.5, abs=1e-6)
    assert lrs[59] == pytest.approx(0.0, abs=1e-9) and lrs[60] == pytest.approx(0.0, abs=1e-9)


def test_cosine_over_the_budget_still_ends_at_the_last_step_when_steps_run_out_first():
    # Prepare: 10 planned steps that take almost no time out of a 10-minute budget
    cfg = TrainConfig(lr=1.0, warmup_steps=0, max_minutes=10, schedule_over="budget")
    # Execute
    lrs = _lrs(cfg, 10, _Clock(), 0.001, 10)
    # Assert: the step fraction leads; the last step ends the cosine
    assert lrs[4] == pytest.approx(0.5, abs=1e-3) and lrs[9] == pytest.approx(0.0, abs=1e-9)


def test_budget_schedule_keeps_the_warm_up_in_steps():
    # Prepare: 5 warm-up steps that "take" the whole budget
    cfg = TrainConfig(lr=1.0, warmup_steps=5, max_minutes=1, schedule_over="budget")
    # Execute
    lrs = _lrs(cfg, 100, _Clock(), 60.0, 4)
    # Assert: warm-up ramps by steps regardless of the clock
    assert lrs == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6])


def test_budget_schedule_without_a_budget_is_rejected_with_the_setting_to_change():
    with pytest.raises(FieldError, match="max_minutes"):
        TrainConfig(schedule_over="budget")
