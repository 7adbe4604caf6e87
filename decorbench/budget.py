"""Stop rules for one run. The first limit hit ends the run, and the end record names it: "completed" for the
planned length (epochs, steps), "budget" for a resource cut (seconds, joules), "target" for the accuracy target."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Any subset of limits. Steps and epochs are exact; seconds, joules and the target are checked at eval points,
    so a run may overshoot them by at most one eval interval (the records show by how much)."""

    max_epochs: int | None = None
    max_steps: int | None = None
    max_train_seconds: float | None = None
    max_energy_j: float | None = None
    target_accuracy: float | None = None
    stop_at_target: bool = False

    def __post_init__(self) -> None:
        for name in ("max_epochs", "max_steps", "max_train_seconds", "max_energy_j"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:  # NaN too: no run would ever reach it
                raise ValueError(f"budget.{name} must be positive and finite, got {value}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"budget.target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.stop_at_target and self.target_accuracy is None:
            raise ValueError("budget.stop_at_target needs budget.target_accuracy")
        if self.max_energy_j is None and not self._ends_without_energy:
            raise ValueError("the budget has no limit: set max_epochs, max_steps, max_train_seconds, max_energy_j "
                             "or stop_at_target")

    @property
    def _ends_without_energy(self) -> bool:
        return (self.max_epochs is not None or self.max_steps is not None or self.max_train_seconds is not None
                or self.stop_at_target)

    @property
    def energy_only(self) -> bool:
        """Whether max_energy_j is the one limit that can end a run (then an unmeasured run could never end)."""
        return self.max_energy_j is not None and not self._ends_without_energy

    def exhausted(self, *, step: int, epoch: int, train_time_s: float, energy_j: float | None,
                  accuracy: float | None) -> tuple[str, str] | None:
        """(status, reason) of the first limit reached by this state, or None to go on.

        `epoch` counts completed epochs; `accuracy` is the latest eval accuracy (None between evals).
        """
        if self.stop_at_target and accuracy is not None and accuracy >= self.target_accuracy:
            return "target", f"eval accuracy {accuracy:.4f} reached target {self.target_accuracy}"
        if self.max_steps is not None and step >= self.max_steps:
            return "completed", f"max_steps {self.max_steps} done"
        if self.max_epochs is not None and epoch >= self.max_epochs:
            return "completed", f"max_epochs {self.max_epochs} done"
        if self.max_train_seconds is not None and train_time_s >= self.max_train_seconds:
            return "budget", f"max_train_seconds {self.max_train_seconds} reached ({train_time_s:.3f} s)"
        if self.max_energy_j is not None and energy_j is not None and energy_j >= self.max_energy_j:
            return "budget", f"max_energy_j {self.max_energy_j} reached ({energy_j:.1f} J)"
        return None
