#!/usr/bin/env bash
# Everything reports/gpu/ needs from one GPU lease, in one call that ends within SECONDS. Each phase is
# time-boxed and what it measured is kept as it goes, so a phase that runs out of time costs only itself.
#
#   DECORBENCH_GIT_COMMIT=<sha> bash reports/scripts/gpu_session.sh OUT [SECONDS [PHASE...]]
#
# PHASE (default all five, in this order):
#   env        `decorbench env` and `nvidia-smi -q` (the GPU's state: clocks, power limit, temperature)
#   tests      the step, meter, env and BatchNorm tests, here with a GPU and NVML (the step never waits for the
#              device; the real NVML counter finds the board torch uses and reads plausible joules; the reference's
#              recomputed BatchNorm statistics hold under bf16 and channels_last)
#   overhead   benchmarks/meter_overhead.py on the GPU: the instrumented loop (NVML, codecarbon) vs a bare one
#   step-cost  reports/scripts/gpu_step_cost.py: DBP vs BP (and BP-CONVERTED) step time, NVML energy by counter and
#              by sampled power, idle power, MFU; ResNet-18/34/50, then ResNet-10, at batch 128 and 256
#   reference  the gpu-reference suite on ResNet-18, 2 seeds, each run's training capped so the four fit the time
#              left, then its report
# Writes OUT/session.log and OUT/gpu-session.tar.gz (everything: env.txt, nvidia-smi.txt, tests.txt,
# meter_overhead.txt, step_cost.{md,json}, reference/ with runs/ and report.html), rebuilt after every phase; the device tool
# returns at most 8 files, two folders deep. Installs .whl/*.whl first if there (reports/scripts/gpu_wheels.sh).
# OVERHEAD_ARGS, STEP_COST_ARGS and SUITE_ARGS replace the phases' default arguments (the tests run it tiny on a CPU).
set -uo pipefail

out=${1:?usage: gpu_session.sh OUT [SECONDS [PHASE...]]}
budget=${2:-480}
shift $(($# < 2 ? $# : 2))
phases=${*:-env tests overhead step-cost reference}
python=${PYTHON:-python3}
overhead_args=${OVERHEAD_ARGS:---steps 2000 --repeats 3 --device cuda}  # windows of ≈ 1 s, as in real runs
step_cost_args=${STEP_COST_ARGS:---windows 3 --window-s 1.5 --idle-s 5}
# a checkpoint every 10th eval point: a ResNet-18 DBP one is ≈ 0.5 GB, about a second per write
suite_args=${SUITE_ARGS:-gpu-reference --set models=[\"resnet18\"] --set seeds=[0,1] --set train.checkpoint_every=10}
runs=4            # the reference phase's runs: bp and dbp x 2 seeds
run_overhead_s=35 # per run, besides training: model, warm-up, FLOP count, data on the GPU, evaluations, checkpoints
deadline=$((SECONDS + budget))

mkdir -p "$out"
work=$(mktemp -d)
site=$(mktemp -d)
exec > >(tee -a "$out/session.log") 2>&1
log_writer=$!

left() { echo $((deadline - SECONDS)); }
upto() { local l; l=$(left); echo $(($1 < l ? $1 : l)); }  # N seconds, or what is left if less

bundle() {
    tar -czf "$out/gpu-session.tar.gz.tmp" -C "$work" . && mv "$out/gpu-session.tar.gz.tmp" "$out/gpu-session.tar.gz"
}

# timebox SECONDS CMD...: SIGTERM at the limit (decorbench and the scripts keep what they measured), SIGKILL 20 s on.
timebox() {
    local limit=$1
    shift
    if ((limit < 10)); then
        echo "skipped: only ${limit} s left"
        return 1
    fi
    timeout --kill-after=20 "$limit" "$@"
}

if [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl || echo "wheels from .whl failed to install: codecarbon may be missing"
fi
set -f  # from here on a word like models=["resnet18"] is never a glob
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "== gpu_session: phases [$phases], ${budget} s, commit ${DECORBENCH_GIT_COMMIT:-unknown}, $(date -u +%FT%TZ)"

for phase in $phases; do
    echo "== $phase ($(left) s left)"
    case $phase in
    env)
        timebox "$(upto 60)" "$python" -m decorbench env | tee "$work/env.txt"
        status=$?
        timeout 30 nvidia-smi -q >"$work/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available"
        ;;
    tests)
        timebox "$(upto 120)" "$python" -m pytest -q -p no:cacheprovider tests/test_step.py tests/test_gpu_meters.py \
            tests/test_meters.py tests/test_env.py tests/test_batchnorm.py | tee "$work/tests.txt"
        status=$?
        ;;
    overhead)
        # shellcheck disable=SC2086
        timebox "$(upto 120)" "$python" -m benchmarks.meter_overhead $overhead_args | tee "$work/meter_overhead.txt"
        status=$?
        ;;
    step-cost)
        # leaves the reference phase, when it follows, at least half of what is left
        share=$(left)
        [[ " $phases " == *" reference "* ]] && share=$((share / 2))
        # shellcheck disable=SC2086  # the arguments are words on purpose
        timebox "$share" "$python" reports/scripts/gpu_step_cost.py --out "$work/step_cost" $step_cost_args
        status=$?
        ;;
    reference)
        limit=$(($(left) - 30))  # the report and the bundle after it
        per_run=$(((limit - 20 - runs * run_overhead_s) / runs))
        per_run=$((per_run > 150 ? 150 : per_run))
        if ((per_run < 10)); then
            echo "skipped: ${per_run} s of training per run is too little"
            status=skipped
        else
            echo "training capped at ${per_run} s per run"
            # shellcheck disable=SC2086
            timebox "$limit" "$python" -m decorbench run $suite_args --set "budget.max_train_seconds=$per_run" \
                --out "$work/reference"
            status=$?  # 124: stopped at the time limit, its runs kept (interrupted); 1: a run failed (recorded)
            timebox "$(upto 60)" "$python" -m decorbench report "$work/reference" -o "$work/reference/report.html"
        fi
        ;;
    *)
        echo "unknown phase $phase (env, tests, overhead, step-cost, reference)"
        status=unknown
        ;;
    esac
    echo "== $phase: $status"
    rm -rf "$work/reference/checkpoints"  # a killed run's; large, and only for resuming
    bundle
done

echo "== done, $(left) s of ${budget} left"
if [ -f "$work/step_cost.md" ]; then cat "$work/step_cost.md"; fi
exec >&- 2>&-
wait "$log_writer"  # session.log complete before the device tool collects OUT
