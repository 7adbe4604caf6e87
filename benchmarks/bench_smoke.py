"""asv: the smoke suite's outcomes as tracked numbers — time-to-accuracy on scikit-learn's digits (steps and
seconds) for BP and DBP, and how far DBP decorrelates in a fixed number of steps. A change to the method or the
loop that slows learning shows here even when the step time stays the same."""

import math

import torch
import torch.nn.functional as F

from benchmarks.common import METHODS, TINY
from decorbench.data import load_data
from decorbench.dbp import decorrelate, update
from decorbench.models import create_model
from decorbench.suite import load_config
from decorbench.train import train_run

MODELS = ["small-cnn", "mlp"]
EVAL_EVERY = 5  # steps: finer than the suite's once per epoch (21 steps), so TTA moves in small increments


class _Records(list):
    def eval(self, record: dict) -> None:
        self.append(record)


class TimeToAccuracy:
    """Seed 0 of the built-in smoke suite, stopped at its target accuracy (0.9). NaN if the target is missed."""

    params = (METHODS, MODELS)
    param_names = ["method", "model"]
    rounds = 1

    def setup(self, method, model):
        overrides = [f"train.eval_every={EVAL_EVERY}", "budget.stop_at_target=true"]
        if TINY:  # a target every model and method passes at the first eval, so the tests reach the hit's fields
            overrides += ["budget.max_steps=10", "budget.target_accuracy=0.15"]
        config = load_config("smoke", overrides)
        (spec,) = [s for s in config.runs() if (s.method, s.model, s.seed) == (method, model, 0)]
        records = _Records()
        train_run(spec, records, device=torch.device("cpu"))
        hit = next((r for r in records if r["eval_accuracy"] >= config.budget.target_accuracy), None)
        self.steps, self.seconds = (hit["step"], hit["train_time_s"]) if hit else (math.nan, math.nan)

    def track_steps_to_target(self, method, model):
        return self.steps

    track_steps_to_target.unit = "steps"

    def track_seconds_to_target(self, method, model):
        return self.seconds

    track_seconds_to_target.unit = "seconds"


class DecorrelationLoss:
    """DBP's decorrelation loss after N training steps of the smoke suite's settings (lower: more decorrelated)."""

    params = [MODELS]
    param_names = ["model"]
    unit = "loss"
    rounds = 1
    steps = 5 if TINY else 100

    def track_decor_loss_after_n_steps(self, model):
        config = load_config("smoke")
        torch.manual_seed(0)
        data = load_data("digits", batch_size=config.train.batch_size, seed=0)
        net = decorrelate(create_model(model, data.num_classes, input_shape=data.input_shape),
                          kappa=config.dbp.kappa, sample_fraction=config.dbp.sample_fraction).train()
        opt = torch.optim.Adam(net.parameters(), lr=config.train.lr)
        batches = (b for epoch in range(self.steps) for b in data.train_batches(epoch))
        for step, (x, y) in enumerate(batches):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decor_loss = update(net, config.dbp.lr)  # measured before this step's change of R
            if step == self.steps:
                return decor_loss
