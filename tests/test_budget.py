"""Budgets: the first limit hit ends a run, and says which."""

import pytest

from decorbench.budget import Budget

STATE = {"step": 10, "epoch": 1, "train_time_s": 5.0, "energy_j": None, "accuracy": 0.5}


@pytest.mark.parametrize("budget, state, expected", [
    (Budget(max_steps=10), {}, "completed"),
    (Budget(max_steps=11), {}, None),
    (Budget(max_epochs=1), {}, "completed"),
    (Budget(max_epochs=2), {}, None),
    (Budget(max_train_seconds=5.0), {}, "budget"),
    (Budget(max_train_seconds=6.0), {}, None),
    (Budget(max_energy_j=100.0), {"energy_j": 100.0}, "budget"),
    (Budget(max_energy_j=100.0, max_steps=99), {}, None),  # no energy reading: the joule limit cannot fire
    (Budget(target_accuracy=0.5, stop_at_target=True), {}, "target"),
    (Budget(target_accuracy=0.5, max_steps=99), {}, None),  # a target without stop_at_target only marks TTA
    (Budget(target_accuracy=0.5, stop_at_target=True, max_steps=10), {}, "target"),  # target wins a tie
])
def test_first_limit_hit_ends_the_run(budget, state, expected):
    result = budget.exhausted(**{**STATE, **state})
    assert (result and result[0]) == expected
    if result:
        assert result[1]  # a reason for the end record


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no limit"),
    ({"max_steps": 0}, "max_steps must be positive"),
    ({"max_train_seconds": -1.0}, "max_train_seconds must be positive"),
    ({"target_accuracy": 1.5, "max_steps": 1}, "target_accuracy"),
    ({"stop_at_target": True}, "needs budget.target_accuracy"),
])
def test_bad_budgets_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Budget(**kwargs)
