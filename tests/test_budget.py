"""Budgets: the first limit hit ends a run, and says which."""

import pytest

from decorbench.budget import Budget

STATE = {"step": 10, "epoch": 1, "train_time_s": 5.0, "energy_j": None, "accuracy": 0.5}


@pytest.mark.parametrize("budget, state, expected", [
    (Budget(max_steps=10), {}, ("completed", "max_steps 10 done")),
    (Budget(max_steps=11), {}, None),
    (Budget(max_epochs=1), {}, ("completed", "max_epochs 1 done")),
    (Budget(max_epochs=2), {}, None),
    (Budget(max_train_seconds=5.0), {}, ("budget", "max_train_seconds 5.0 reached (5.000 s)")),
    (Budget(max_train_seconds=6.0), {}, None),
    (Budget(max_energy_j=100.0), {"energy_j": 100.04}, ("budget", "max_energy_j 100.0 reached (100.0 J)")),
    (Budget(max_energy_j=100.0, max_steps=99), {}, None),  # no energy reading: the joule limit cannot fire
    (Budget(target_accuracy=0.5, stop_at_target=True), {"accuracy": 0.625},
     ("target", "eval accuracy 0.6250 reached target 0.5")),
    (Budget(target_accuracy=0.5, max_steps=99), {}, None),  # a target without stop_at_target only marks TTA
    (Budget(target_accuracy=0.5, stop_at_target=True, max_steps=10), {},  # the target wins a tie
     ("target", "eval accuracy 0.5000 reached target 0.5")),
    (Budget(max_steps=10, max_train_seconds=1.0), {}, ("completed", "max_steps 10 done")),  # the plan before a cut
])
def test_first_limit_hit_ends_the_run_and_its_reason_names_the_limit(budget, state, expected):
    assert budget.exhausted(**{**STATE, **state}) == expected


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
