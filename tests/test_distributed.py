"""Training on several processes (torchrun, DDP, gloo on this CPU): every rank trains on its share of the same global
batches, DBP's R stays the same on every rank, rank 0 alone writes, and a stopped job resumes exactly."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from decorbench import distributed
from decorbench.checkpoint import load_checkpoint
from decorbench.cli import main
from decorbench.data import load_data
from decorbench.dbp import DecorLinear, decorrelate, update
from decorbench.models import create_model
from decorbench.results import read_run, run_path
from decorbench.suite import ConfigError, load_config, pending_runs
from decorbench.train import train_run

STEPS, EVERY = 196, 7  # eval points off the ranks' stop polls (every 10 steps): a stop mostly lands between two
SUITE = ["smoke", "--set", 'models=["mlp"]', "--set", "seeds=[0]", "--set", f"budget={{max_steps={STEPS}}}",
         "--set", f"train.eval_every={EVERY}"]


# --- each rank's share of the data ---------------------------------------------------------------------------


def test_ranks_share_each_global_batch_and_the_test_set_of_a_tensor_dataset():
    one = load_data("synthetic", batch_size=8, seed=3, options={"train_size": 40, "test_size": 10, "image_size": 4})
    ranks = [load_data("synthetic", batch_size=8, seed=3, rank=r, world_size=2,
                       options={"train_size": 40, "test_size": 10, "image_size": 4}) for r in (0, 1)]
    assert ranks[0].steps_per_epoch() == one.steps_per_epoch() == 5
    for whole, *parts in zip(one.train_batches(1), *(d.train_batches(1) for d in ranks), strict=True):
        assert [len(x) for x, _ in parts] == [4, 4]
        assert torch.equal(whole[0], torch.cat([x for x, _ in parts]))
        assert torch.equal(whole[1], torch.cat([y for _, y in parts]))
    shards = [torch.cat([x for x, _ in d.test_batches()]) for d in ranks]
    assert [len(s) for s in shards] == [5, 5]
    assert torch.equal(torch.cat(shards), torch.cat([x for x, _ in one.test_batches()]))


def test_ranks_of_an_image_folder_get_the_same_images_per_global_batch(tmp_path):
    for split, n in (("train", 7), ("val", 3)):
        for c, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.random.default_rng(10 * c + i).integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    opts = {"image_size": 16, "num_workers": 0}
    one = load_data("imagenette", batch_size=4, seed=0, root=tmp_path, options=opts)
    ranks = [load_data("imagenette", batch_size=4, seed=0, root=tmp_path, options=opts, rank=r, world_size=2)
             for r in (0, 1)]

    def key(x):  # DistributedSampler deals the batch's images out in another order: compare them as sets
        return sorted(x.flatten(1).sum(1).tolist())

    batches = list(zip(one.train_batches(2), *(d.train_batches(2) for d in ranks), strict=True))
    assert len(batches) == one.steps_per_epoch() == 3
    for (x, _), (x0, _), (x1, _) in batches:
        assert len(x0) == len(x1) == 2 and key(x) == pytest.approx(key(torch.cat([x0, x1])), rel=1e-6)
    assert sum(len(y) for d in ranks for _, y in d.test_batches()) == one.test_size == 6


def test_batch_size_must_split_evenly_over_the_processes(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size 64 .* does not split evenly over 3 processes"):
        pending_runs(load_config("smoke"), tmp_path, resume=False, world_size=3)
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        load_data("digits", batch_size=64, seed=0, rank=0, world_size=3)


# --- two ranks spawned here: DBP's R under DistributedDataParallel, and a straight run of the suite's DBP run ----


def _spec(method: str):
    return next(s for s in load_config("smoke", SUITE[2::2]).runs() if s.method == method)


class Records:
    def __init__(self):
        self.evals = []

    def eval(self, record):
        self.evals.append(record)


class WarnedMeter:
    """An energy meter measuring 1 J per window whose board, on rank 1 only, another process shares."""

    source, unavailable_reason = "nvml-counter", None

    def __init__(self, rank: int):
        self.warnings = ["2 processes were on the GPU at once"] if rank == 1 else []

    def begin_window(self):
        pass

    def end_window(self):
        return 1.0

    def reset(self, total_j):
        pass


def _two_ranks(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)  # as torchrun sets it: two ranks on two cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial weights on both ranks
    net = decorrelate(create_model("small-cnn", 10, input_shape=(1, 8, 8)), kappa=0.5, sample_fraction=0.5)
    model = distributed.wrap(net, torch.device("cpu"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(rank)  # each rank its own data and its own DBP samples
    for _ in range(3):
        loss = F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        update(net, 1e-2, distributed=True)
    # One pooled step on known samples: few rows of many features (sent as rows), many rows of few (as d×d moments)
    layers = [DecorLinear(32, 2), DecorLinear(4, 2)]
    for layer, n in zip(layers, (4, 16)):
        layer.sample = torch.randn(n, layer.in_features, generator=torch.Generator().manual_seed(rank))
    update(torch.nn.Sequential(*layers), 0.05, distributed=True)
    straight = Records()  # the torchrun test's DBP run, never stopped
    _, _, totals = train_run(_spec("dbp"), straight, device=torch.device("cpu"), energy=WarnedMeter(rank))
    torch.save({"trained": {k: v for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k},
                "pooled": [layer.R for layer in layers], "straight": straight.evals, "totals": totals,
                "batchnorm": _stopped_between_evals_and_resumed(out)}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _stopped_between_evals_and_resumed(out: str) -> dict:
    """small-cnn (BatchNorm: each rank's running statistics differ between eval points) run straight, and stopped
    at step 10 (a stop poll, between evals 7 and 14) then resumed from its checkpoint."""
    config = load_config("smoke", ['models=["small-cnn"]', 'methods=["bp"]', "seeds=[0]", "budget.max_steps=21",
                                   "train.eval_every=7"])
    spec = config.runs()[0]
    straight, stopped, resumed = Records(), Records(), Records()
    train_run(spec, straight, device=torch.device("cpu"))
    steps, checkpoint = [0], Path(out) / "bn.pt"
    status, _, _ = train_run(spec, stopped, device=torch.device("cpu"), checkpoint=checkpoint,
                             should_stop=lambda: steps[-1] >= 9, on_step=lambda step, *_: steps.append(step))
    saved = load_checkpoint(checkpoint, torch.device("cpu")) if distributed.rank() == 0 else None
    train_run(spec, resumed, device=torch.device("cpu"), checkpoint=checkpoint, resume_from=saved)
    return {"status": status, "straight": straight.evals, "stopped": stopped.evals, "resumed": resumed.evals}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_two_ranks, args=(str(out / "init"), str(out)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


def test_ddp_training_keeps_R_and_weights_identical_across_ranks(two_ranks):
    zero, one = (rank["trained"] for rank in two_ranks)
    assert zero.keys() == one.keys() and all(torch.equal(zero[k], one[k]) for k in zero)  # bit-identical
    Rs = [v for k, v in zero.items() if k.endswith(".R")]
    assert len(Rs) == 4 and all(not torch.equal(R, torch.eye(len(R))) for R in Rs)  # R did move


def test_every_ranks_energy_warnings_reach_the_end_record(two_ranks):
    for saved in two_ranks:  # the same on both ranks; rank 0 writes it
        assert saved["totals"]["energy_warnings"] == ["rank 1: 2 processes were on the GPU at once"]


def test_a_stop_between_evals_resumes_batchnorm_statistics_of_every_rank_exactly(two_ranks):
    runs = two_ranks[0]["batchnorm"]
    assert runs["status"] == "interrupted" and [e["step"] for e in runs["stopped"]] == [7]
    assert [e["step"] for e in runs["resumed"]] == [14, 21]
    for resumed, straight in zip(runs["resumed"], runs["straight"][1:], strict=True):
        for key in ("train_loss", "eval_loss", "eval_accuracy"):
            assert resumed[key] == straight[key], (resumed["step"], key)


def test_the_pooled_update_is_the_one_process_update_on_all_ranks_samples(two_ranks):
    layers = [DecorLinear(32, 2), DecorLinear(4, 2)]
    for layer, n in zip(layers, (4, 16)):
        layer.sample = torch.cat([torch.randn(n, layer.in_features, generator=torch.Generator().manual_seed(r))
                                  for r in (0, 1)])
    update(torch.nn.Sequential(*layers), 0.05)
    for layer, r0, r1 in zip(layers, two_ranks[0]["pooled"], two_ranks[1]["pooled"]):
        assert torch.equal(r0, r1) and not torch.equal(r0, torch.eye(len(r0)))
        torch.testing.assert_close(r0, layer.R, rtol=1e-6, atol=1e-6)


# --- torchrun -m decorbench run -----------------------------------------------------------------------------


def torchrun(out, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "decorbench", "run", *SUITE, "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """BP then DBP on 2 processes, torchrun sent SIGTERM during the DBP run; the results as they were then."""
    out = tmp_path_factory.mktemp("ddp")
    proc, dbp = torchrun(out), run_path(out, "smoke-digits-mlp-dbp-s0")
    deadline = time.monotonic() + 120
    while not (dbp.exists() and len(read_run(dbp)["evals"]) >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    files = {m: run_path(out, f"smoke-digits-mlp-{m}-s0") for m in ("bp", "dbp")}
    return out, proc.returncode, stdout, stderr, {m: f.read_text() for m, f in files.items()}


def test_two_processes_write_each_record_once_and_train_bp_as_one_process_would(interrupted):
    _, returncode, stdout, stderr, texts = interrupted
    assert returncode != 0  # torchrun's own exit status after a signal; each rank exits 130
    assert stdout.count("speedup_bp_over_dbp") == 1  # one summary: rank 0's
    assert "continue with: torchrun --nproc_per_node=2 -m decorbench run smoke" in stderr
    records = {m: [json.loads(line) for line in text.splitlines()] for m, text in texts.items()}
    for method, lines in records.items():
        assert [r["type"] for r in lines] == ["run"] + ["eval"] * (len(lines) - 2) + ["end"]
        assert lines[0]["world_size"] == 2
    bp = records["bp"][1:-1]
    assert records["bp"][-1]["status"] == "completed" and records["dbp"][-1]["status"] == "interrupted"
    assert [e["step"] for e in bp] == list(range(EVERY, STEPS + 1, EVERY)) and bp[-1]["eval_accuracy"] > 0.9

    # No BatchNorm in the MLP and no randomness in BP: the shared global batches give one process's numbers
    single_process, threads = Records(), torch.get_num_threads()
    torch.set_num_threads(1)  # much faster here while the ranks' processes may still be exiting
    try:
        train_run(_spec("bp"), single_process, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    for single, ddp in zip(single_process.evals, bp, strict=True):
        assert (ddp["step"], ddp["samples"], ddp["flops"]) == (single["step"], single["samples"], single["flops"])
        for key in ("train_loss", "eval_loss", "eval_accuracy"):
            assert ddp[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), (ddp["step"], key)


def test_resume_continues_the_interrupted_ddp_run_exactly(interrupted, two_ranks, capsys):
    out, *_ = interrupted
    path = run_path(out, "smoke-digits-mlp-dbp-s0")
    stopped_at = read_run(path)["evals"][-1]["step"]
    assert stopped_at < STEPS

    # the checkpoint holds each rank's random state: one process may not take it over
    assert main(["run", *SUITE, "--out", str(out), "--resume"]) == 2
    assert "checkpointed by 2 process(es)" in capsys.readouterr().err

    proc = torchrun(out, "--resume")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    resumed = read_run(path)
    steps = [e["step"] for e in resumed["evals"]]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS and stopped_at in steps
    assert resumed["end"]["status"] == "completed" and resumed["evals"][-1]["eval_accuracy"] > 0.9
    expected = {e["step"]: e for e in two_ranks[0]["straight"]}
    after = [e for e in resumed["evals"] if e["step"] > stopped_at]
    for e in after:  # the same R, weights, optimizer, schedule, per-rank random state, batches and loss sums
        for key in ("eval_loss", "eval_accuracy", "flops", "train_loss", "decor_loss", "decor_loss_by_layer"):
            assert e[key] == pytest.approx(expected[e["step"]][key], rel=1e-5), (e["step"], key)
