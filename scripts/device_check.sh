#!/usr/bin/env bash
# The GPU rows that docs/results.md and docs/performance.md leave pending, as one device call.
#
# A lent GPU comes with ~15 minutes of device time for the whole session (the machine's start
# included) and one call may run 10, so the script runs to its own deadline (DEADLINE_S after it
# starts) and sizes each stage from what is left:
#   bench        our bigger step at two scan unrolls against JAX's cuDNN LSTM (the faster
#                unroll is used by every run below: it changes the program, not the equations);
#   shakespeare  a 400-step timing run of configs/shakespeare_gpu.py, then the 3-minute race
#                with the cosine sized to the steps that 3 minutes hold, and samples from its best;
#   bigger       the bigger model's runs named in BIGGER_RUNS side by side on the one GPU (a scan
#                step is latency-bound: two processes fill each other's gaps; 136 steps/s each
#                against 238 alone on 2026-12-04) until the deadline. MODE=resume runs only this
#                stage: a second call on the still-warm machine finds runs/ where the first left
#                it and continues the runs exactly.
# What comes back lands in $OUT: the log, the benchmark's JSON, the samples, and the runs
# (metrics, configs and the bigger runs' latest checkpoints) as one .tgz cut into 15 MiB parts
# (the device tool returns at most 8 files of 16 MiB).
#
#   SMOKE=1 OUT=/tmp/out bash scripts/device_check.sh   # first, here: a few minutes on a CPU
#   python3 -m pip download --no-deps -d .whl ml-collections==1.1.0   # not installed there
#   python3 -m pip download --no-deps -d .whl/pinned flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8
#   device run: command "bash scripts/device_check.sh", carry [".whl", "data"], timeout_s 600
#   then at once, on the still-warm machine: command "MODE=resume DEADLINE_S=<what is left, less
#   ~60 s> bash scripts/device_check.sh". UNROLL=10 skips the benchmark (~20 s) when its numbers
#   are not wanted, SHAKESPEARE_S=0 the race, BIGGER_RUNS= the bigger runs. What is left for a
#   GPU (2026-12-04): the held-out run's 50 epochs (~101,500 steps at 238 a second: ~7.5 min
#   with its evaluations) and the race (~5 min with its timing run and samples); with a
#   machine's start (1-2 min) that is the whole 15 minutes, so: call 1 "UNROLL=10
#   SHAKESPEARE_S=0 bash scripts/device_check.sh", then at once call 2 "UNROLL=10 BIGGER_RUNS=
#   DEADLINE_S=<left, less ~60 s> bash scripts/device_check.sh".
#
# data/ is ignored by git and the machine is offline, so the corpora travel as a carry. That
# machine's JAX (0.11.2 when last listed) is newer than requirements.txt pins and its flax,
# optax and orbax are whatever its image holds: the script tries them first and, if the
# benchmark fails on them, installs the pinned wheels from .whl/pinned and tries again.
# Unpack here with `cat runs.tgz.* | tar xzf - -C runs`.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
START=$(date +%s)
DEADLINE_S=${DEADLINE_S:-565}      # leaves the call's 600 s limit room for packing
MODE=${MODE:-full}                 # full | resume (the bigger runs only)
# bigger: faithful, done on 2026-12-04 (docs/runs/bigger_gpu); bigger_val: 10% held out, 24 of 50
BIGGER_RUNS=${BIGGER_RUNS-bigger_val}  # empty: none
BENCH_S=${BENCH_S:-110}
PROBE_STEPS=${PROBE_STEPS:-400}    # the Shakespeare timing run's length, compilation not counted
SHAKESPEARE_S=${SHAKESPEARE_S:-180}
PY=${PY:-python3}
RUNS=runs
BENCH_ARGS="--shapes=bigger --peers=jax-cudnn --unrolls=1,10 --rounds=3 --repeats=3"
BIGGER_CONFIG=configs/bigger.py; SHAKESPEARE_CONFIG=configs/shakespeare_gpu.py
EXTRA=()
if [ -n "${SMOKE:-}" ]; then  # tiny shapes in a scratch folder: runs/ here stays untouched
  DEADLINE_S=${SMOKE_DEADLINE_S:-240}; PROBE_STEPS=100; RUNS="$OUT/smoke_runs"
  [ "$SHAKESPEARE_S" -gt 0 ] && SHAKESPEARE_S=4
  BENCH_ARGS="--shapes=small --peers= --unrolls=1,2 --batch=4 --seq_len=8 --rounds=1 --repeats=1"
  BIGGER_CONFIG=configs/tiny.py
  EXTRA=(--config.model.hidden_sizes="(16,16)" --config.train.batch_size=8 --config.data.seq_len=16
         --config.data.stride=16 --config.train.max_steps=40)  # the probe and the race set their own
fi
LOG="$OUT/device_check.log"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the two bigger runs share the GPU
mkdir -p "$OUT" "$RUNS"
left() { echo $((DEADLINE_S - ($(date +%s) - START))); }

SITE=/tmp/site
install() {  # install WHEELS...: into $SITE, which comes first on the path
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@" \
    >>"$LOG" 2>&1 || { echo "device_check: installing $* failed" | tee -a "$LOG" >&2; return 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
}
WHEELS=${WHEELS:-.whl}  # the carried wheels; the pinned fallback in $WHEELS/pinned
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then install "$WHEELS"/*.whl || exit 1; fi
PINNED=""
pin() {  # the pinned flax, optax and orbax, once
  [ -z "$PINNED" ] && ls "$WHEELS"/pinned/*.whl >/dev/null 2>&1 || return 1
  PINNED=1; echo "device_check: installing the pinned wheels" | tee -a "$LOG"; install "$WHEELS"/pinned/*.whl
}

stage() {  # stage NAME SECONDS COMMAND...: runs one stage under a hard limit, logging both ends
  local name=$1 seconds=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${seconds}s, $(left)s to the deadline): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$seconds" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc" | tee -a "$LOG"
  return $rc
}
FAILED=()  # later stages still run: one broken stage should not waste the call

train() {  # train NAME CONFIG BUDGET_S ARGS...: scripts/train.py into $RUNS/NAME, the stage limit above the budget
  local name=$1 config=$2 budget=$3; shift 3
  # The trainer's budget (0: none) stops it between steps with a final checkpoint; +90 s of
  # limit covers compilation, the last evaluation and the save, and only guards against a hang.
  stage "$name" $((budget + 90)) $PY scripts/train.py --config="$config" --config.model.unroll="$UNROLL" \
    --config.train.time_budget_s="$budget" --workdir="$RUNS/$name" "${EXTRA[@]}" "$@"
}

pack() {  # every run's records, and the bigger runs' latest checkpoints, as $OUT/runs.tgz.aa, .ab, ...
  local list="$OUT/.pack_list"
  (cd "$RUNS" && for run in */; do
     run=${run%/}
     find "$run" -maxdepth 1 -type f
     find "$run/checkpoints" -maxdepth 1 -type f 2>/dev/null
     case $run in bigger*)
       latest=$(ls "$run/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1)
       [ -n "$latest" ] && echo "$run/checkpoints/$latest";;
     esac
   done) >"$list"
  tar czf - -C "$RUNS" -T "$list" 2>>"$LOG" | split -b 15M - "$OUT/runs.tgz."
  rm -f "$list"
}

stage devices 90 bash -c "nvidia-smi -L; $PY -c 'import jax, flax, optax, orbax.checkpoint as o; \
print(\"jax\", jax.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__, \"orbax\", \
o.__version__ if hasattr(o, \"__version__\") else \"?\"); print(jax.devices())'" || FAILED+=(devices)

FIXED_UNROLL=${UNROLL:-}  # set: no benchmark, this unroll (10 was the H200's faster on 2026-12-04)
UNROLL=${FIXED_UNROLL:-$(cat "$RUNS/unroll" 2>/dev/null || echo 1)}
if [ "$MODE" = full ] && [ -z "$FIXED_UNROLL" ]; then
  bench() { stage "$1" "$BENCH_S" bash -c "$PY scripts/benchmark.py train $BENCH_ARGS $2 --json > '$OUT/bench.json'"; }
  # A failure is the cuDNN peer's or ours; ours alone tells, and ours failing means the image's
  # flax, optax or orbax: the pinned ones are the fallback.
  if ! bench bench "" && ! bench bench_ours --peers=; then
    if ! { pin && bench bench_pinned --peers=; }; then FAILED+=(bench); fi
  fi
  # The faster of our unrolls in the benchmark (1 when it could not tell).
  UNROLL=$($PY - "$OUT/bench.json" <<'EOF' 2>>"$LOG" || echo 1
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["rows"] if r["peer"] == "ours" and r.get("s_per_step")]
print(int(min(rows, key=lambda r: r["s_per_step"])["note"].rsplit("unroll ", 1)[1]) if rows else 1)
EOF
)
fi
if [ "$MODE" = full ]; then
  echo "$UNROLL" >"$RUNS/unroll"  # a resumed run must keep its model config, unroll included
  echo "device_check: scan unroll $UNROLL" | tee -a "$LOG"
fi
if [ "$MODE" = full ] && [ "$SHAKESPEARE_S" -gt 0 ]; then

  # The race's cosine needs its length: time PROBE_STEPS steps of the same run first. A count,
  # not a budget: on 2026-12-04 a 20 s budget ended before the first compilation did.
  probe() { train shakespeare_probe "$SHAKESPEARE_CONFIG" 0 --config.train.max_steps="$PROBE_STEPS" \
    --config.eval.sample_length=0; }
  if ! probe; then
    if ! { pin && rm -rf "$RUNS/shakespeare_probe" && probe; }; then FAILED+=(shakespeare_probe); fi
  fi
  STEPS=$($PY - "$RUNS/shakespeare_probe/metrics.jsonl" "$SHAKESPEARE_S" <<'EOF' 2>>"$LOG" || echo 0
import json, sys
train = [r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "train"]
a, b, budget = train[len(train) > 2], train[-1], float(sys.argv[2])  # train[0]'s time holds the compilation
rate = (b["step"] - a["step"]) / (b["elapsed_s"] - a["elapsed_s"])
setup = train[0]["elapsed_s"] - train[0]["step"] / rate  # compilation: the race's clock pays it too
# 8% for the evaluations and saves; at least half the budget, should setup be mismeasured (a loaded CPU).
print(max(1, int(0.92 * rate * max(budget - setup, budget / 2))))
EOF
)
  echo "device_check: the race's cosine runs over $STEPS steps" | tee -a "$LOG"
  if [ "$STEPS" -gt 0 ]; then
    train shakespeare_gpu "$SHAKESPEARE_CONFIG" "$SHAKESPEARE_S" --config.train.max_steps="$STEPS" \
      || FAILED+=(shakespeare_gpu)
    for temperature in 0 0.5 1.0; do  # the tutorial's greedy argmax and two temperatures
      echo "## best checkpoint, seed text 'ROMEO:\\n', temperature $temperature, --rng=1" >>"$OUT/samples.txt"
      printf 'ROMEO:\n\n' | timeout 120 $PY scripts/generate.py --workdir="$RUNS/shakespeare_gpu" --seed_text=- \
        --length=400 --temperature=$temperature --rng=1 >>"$OUT/samples.txt" 2>>"$LOG"
      echo >>"$OUT/samples.txt"
    done
  else
    FAILED+=(shakespeare_gpu)
  fi
fi

BIGGER_S=$(( $(left) - 60 ))  # the final save, the samples and the packing
if [ "$BIGGER_S" -gt 30 ]; then
  declare -A pids=()
  for run in $BIGGER_RUNS; do
    case $run in
      bigger) held_out=();;
      bigger_val) held_out=(--config.data.val_fraction=0.1);;
      *) echo "device_check: unknown bigger run '$run' (bigger, bigger_val)" | tee -a "$LOG"; FAILED+=("$run"); continue;;
    esac
    train "$run" "$BIGGER_CONFIG" "$BIGGER_S" --config.train.steps_per_dispatch=25 "${held_out[@]}" &
    pids[$run]=$!
  done
  for run in "${!pids[@]}"; do wait "${pids[$run]}" || FAILED+=("$run"); done
else
  echo "device_check: ${BIGGER_S}s left, too little for the bigger runs" | tee -a "$LOG"
fi
pack
grep -h "time budget\|^done\|epoch [0-9]*: training\|best held-out\|^== " "$LOG" | tail -n 40
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "device_check: stages that failed: ${FAILED[*]} (see $LOG)" >&2
  exit 1
fi
