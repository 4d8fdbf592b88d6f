#!/usr/bin/env bash
# The GPU rows that docs/results.md and docs/performance.md leave pending, as one device call.
#
# A lent GPU comes with ~15 minutes of device time for the whole session, and one call may run
# 10, so this script is sized to ~9 minutes and every stage has its own wall-time budget. What
# it makes lands in $OUT: a log, the benchmark's JSON, and each run's workdir as a .tgz cut
# into 15 MiB parts (the device tool returns at most 8 files of 16 MiB, none more than two
# folders down; a workdir is deeper, and each bigger checkpoint, 0.8 M parameters and Adam's
# two moments in float32, is ~10 MB).
#
#   SMOKE=1 OUT=/tmp/out bash scripts/device_check.sh   # first, here: a minute on a CPU
#   python3 -m pip download --no-deps -d .whl ml-collections==1.1.0  # not installed there
#   device run: command "bash scripts/device_check.sh", carry [".whl", "data"], timeout_s 600
#
# data/ is ignored by git and the machine is offline, so the corpora travel as a carry. That
# machine's JAX (0.11 when last listed) is newer than requirements.txt pins; the stage
# `devices` prints the one that ran. Unpack a run here with
# `cat bigger.tgz.* | tar xzf - -C runs`; to extend it in a later call, carry runs/bigger too:
# the same command resumes it exactly. Budgets are environment variables (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
# ~100 + 180 + 180 s, plus compilation, evaluation and saves: ~9 minutes of a 10-minute call.
BENCH_S=${BENCH_S:-100}        # the step benchmark against JAX's cuDNN LSTM (a hard limit)
BIGGER_S=${BIGGER_S:-180}      # the bigger model's 50 epochs need several calls; resumes
SHAKESPEARE_S=${SHAKESPEARE_S:-180}  # issue 6: the best validation loss in 3 minutes
PY=${PY:-python3}
RUNS=runs
if [ -n "${SMOKE:-}" ]; then  # tiny shapes in a scratch folder: runs/ here stays untouched
  BENCH_S=120; BIGGER_S=2; SHAKESPEARE_S=2; RUNS="$OUT/smoke_runs"
  BENCH_ARGS="--shapes=small --peers= --batch=4 --seq_len=8 --rounds=1 --repeats=1"
  BIGGER_CONFIG=configs/tiny.py; SHAKESPEARE_CONFIG="configs/tiny.py"
else
  BENCH_ARGS="--shapes=small,bigger --peers=jax-cudnn --matmul_dtypes=float32,bfloat16 --rounds=5"
  BIGGER_CONFIG=configs/bigger.py; SHAKESPEARE_CONFIG=configs/shakespeare.py
fi
LOG="$OUT/device_check.log"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device_check: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

stage() {  # stage NAME SECONDS COMMAND...: runs one stage under a hard limit, logging both ends
  local name=$1 seconds=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${seconds}s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$seconds" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || FAILED+=("$name")
}
FAILED=()  # later stages still run: one broken stage should not waste the call

pack() {  # pack RUN: $RUNS/RUN as $OUT/RUN.tgz.aa, .ab, ...
  tar czf - -C "$RUNS" "$1" 2>>"$LOG" | split -b 15M - "$OUT/$1.tgz."
}

stage devices 60 $PY -c "import jax; print(jax.__version__, jax.devices())"
stage bench "$BENCH_S" bash -c "$PY scripts/benchmark.py train $BENCH_ARGS --json > '$OUT/bench.json'"
# The trainer's own budget stops it between steps with a final checkpoint; the stage limit
# above it (+120 s for compilation, evaluation and the save) only guards against a hang.
stage bigger $((BIGGER_S + 120)) $PY scripts/train.py --config=$BIGGER_CONFIG \
  --config.train.time_budget_s="$BIGGER_S" --workdir="$RUNS/bigger"
pack bigger
stage shakespeare $((SHAKESPEARE_S + 120)) $PY scripts/train.py --config=$SHAKESPEARE_CONFIG \
  --config.train.time_budget_s="$SHAKESPEARE_S" --workdir="$RUNS/shakespeare_gpu"
pack shakespeare_gpu
grep -h "time budget\|^done\|epoch [0-9]*: training" "$LOG" | tail -n 30
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "device_check: stages that failed: ${FAILED[*]} (see $LOG)" >&2
  exit 1
fi
