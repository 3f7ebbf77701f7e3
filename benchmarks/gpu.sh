#!/usr/bin/env bash
# Issue 17: Table III and what qcxr reaches, on one GPU, in at most 8 minutes of wall time.
#
#   benchmarks/gpu.sh                 # on the GPU machine (device tool: carry wheels)
#   benchmarks/gpu.sh --cpu-rehearsal # here: small sizes, short timeouts, CPU allowed
#
# Steps: (0) install the carried wheels from wheels/ into /tmp/site (the GPU image lacks
# PennyLane, dm-pix, pydantic, zstandard, diskcache; see benchmarks/gpu.md); check that JAX sees
# a GPU (exit 3 if not, unless --cpu-rehearsal); then the cells, each under its own `timeout`,
# each capped by what is left of the total budget (BUDGET_S, default 480 s):
#   1. Table III (Sec. III-E: zero images, 10 warm-up + 30 timed steps, batch 32), qcxr and
#      PennyLane default.qubit + JAX, CDL and DQC at 8/14/19 labels, ResNet50 backbone first,
#      then head only (`qcxr bench table3`);
#   2. DQC/CDL step ratio at 19 labels with the backbone (computed from 1 by the report);
#   3. the largest n the statevector backend trains at batch 32 (ascending search, stops at the
#      first failure), and the mps backend at 26, 45, 100 qubits (`qcxr bench quantum`);
#   4. images/s of frozen-feature extraction at 224 px (benchmarks/features_throughput.py);
#      fine-tuning images/s = batch / step of the qcxr ResNet50 cells of 1.
# Then benchmarks/gpu_bench.py writes benchmarks/gpu-<device>.md (or gpu-cpu-rehearsal.md).
# Raw outputs: $WORK (default /tmp/qcxr-gpu); when $OUT is set (device tool), the report, its
# JSON, the log and a tarball of $WORK are copied there.
#
# Every size and limit below can be overridden from the environment (same names).
set -u
cd "$(dirname "$0")/.."

REHEARSAL=0
for arg in "$@"; do
  case "$arg" in
    --cpu-rehearsal) REHEARSAL=1 ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
if [ "$REHEARSAL" = 1 ]; then
  # CPU rehearsal: exercises every step and the report, measures nothing worth reporting.
  : "${PY:=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
  : "${BUDGET_S:=300}" "${LABELS:=4}" "${BATCH:=2}" "${WARMUP:=1}" "${STEPS:=2}"
  : "${T_TABLE3_BB:=150}" "${T_TABLE3_HEAD:=60}" "${T_CELL:=90}"
  : "${SV_NS:=8 10 12}" "${SV_WARMUP:=1}" "${SV_STEPS:=2}" "${T_SV:=30}"
  : "${MPS_NS:=8 12}" "${MPS_WARMUP:=1}" "${MPS_STEPS:=2}" "${T_MPS:=45}"
  : "${FEAT_BATCHES:=1}" "${FEAT_BATCH:=4}" "${T_FEAT:=60}"
  : "${WORK:=/tmp/qcxr-gpu-rehearsal}" "${REPORT:=$WORK/gpu-cpu-rehearsal.md}"
else
  : "${PY:=python3}"
  : "${BUDGET_S:=480}" "${LABELS:=8 14 19}" "${BATCH:=32}" "${WARMUP:=10}" "${STEPS:=30}"
  : "${T_TABLE3_BB:=170}" "${T_TABLE3_HEAD:=110}" "${T_CELL:=60}"
  # 2^n amplitudes x 32 samples x 8 B: n = 26 is 16 GiB a state, n = 28 64 GiB.
  : "${SV_NS:=22 24 25 26 27 28}" "${SV_WARMUP:=2}" "${SV_STEPS:=5}" "${T_SV:=40}"
  : "${MPS_NS:=26 45 100}" "${MPS_WARMUP:=3}" "${MPS_STEPS:=10}" "${T_MPS:=40}"
  : "${FEAT_BATCHES:=10}" "${FEAT_BATCH:=32}" "${T_FEAT:=60}"
  : "${WORK:=/tmp/qcxr-gpu}" "${REPORT:=}"
fi
mkdir -p "$WORK"
LOG="$WORK/gpu.log"
: >"$LOG"
say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# run_cell NAME SECONDS CMD...: CMD under `timeout`, capped by the budget left (minus 15 s for
# the report); stdout to $WORK/NAME.out, stderr to $WORK/NAME.err; its status to cells.tsv.
run_cell() {
  local name=$1 limit=$2; shift 2
  local remaining=$(( $(left) - 15 ))
  if [ "$remaining" -lt 10 ]; then
    say "$name: not run, budget spent"; printf '%s\tnot run: budget spent\t0\n' "$name" >>"$WORK/cells.tsv"
    return 124
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  say "$name: up to ${limit}s: $*"
  local t0=$(date +%s) rc
  timeout -k 10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  local verdict=ok
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && verdict="timeout after ${limit}s"
  [ "$verdict" = ok ] && [ "$rc" != 0 ] && verdict="exit $rc"
  printf '%s\t%s\t%s\n' "$name" "$verdict" "$took" >>"$WORK/cells.tsv"
  say "$name: $verdict (${took}s)"
  [ "$rc" != 0 ] && tail -n 3 "$WORK/$name.err" | sed 's/^/    /' | tee -a "$LOG" >&2
  return "$rc"
}
: >"$WORK/cells.tsv"

# ---- 0. carried wheels, then the device check
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ "$REHEARSAL" = 0 ] && compgen -G "wheels/*.whl" >/dev/null; then
  say "installing $(ls wheels/*.whl | wc -l) carried wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site wheels/*.whl 2>&1 | tee -a "$LOG" >&2 || { say "wheel install failed"; exit 4; }
  export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH#"$PWD/src"}"
fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
"$PY" - <<'EOF' >"$WORK/env.json" 2>>"$LOG"
import json, platform, sys, importlib.metadata as md
import jax
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
devices = jax.devices()
print(json.dumps({
    "python": platform.python_version(), "executable": sys.executable,
    "platform": devices[0].platform, "device_kind": devices[0].device_kind,
    "devices": [str(d) for d in devices],
    "versions": {p: v(p) for p in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin",
                                   "flax", "optax", "orbax-checkpoint", "pennylane",
                                   "pennylane-lightning", "dm-pix", "numpy", "torch")},
}))
EOF
[ -s "$WORK/env.json" ] || { say "JAX failed to start: see $LOG"; exit 3; }
PLATFORM=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['platform'])" "$WORK/env.json")
say "jax devices: $("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['devices'])" "$WORK/env.json")"
if [ "$PLATFORM" != gpu ] && [ "$REHEARSAL" = 0 ]; then
  say "JAX sees no GPU (platform $PLATFORM): this script measures GPUs only; pass --cpu-rehearsal to rehearse on CPU"
  exit 3
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; } >"$WORK/nvidia-smi.txt"
nvidia-smi >>"$WORK/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import pennylane" 2>>"$LOG" || say "warning: pennylane does not import; its cells will say 'skipped'"

QCXR=("$PY" -m qcxr)
T3=(bench table3 --frameworks qcxr pennylane-jax --heads cdl dqc --labels $LABELS
    --batch "$BATCH" --warmup "$WARMUP" --steps "$STEPS" --isolate cell --timeout "$T_CELL")

# ---- 1 + 2 + 4b. Table III with the backbone (the ratio and fine-tuning images/s come from it)
run_cell table3-resnet50 "$T_TABLE3_BB" "${QCXR[@]}" "${T3[@]}" --backbone resnet50 \
  --out "$WORK/table3-resnet50" --json
# ---- 1. head only
run_cell table3-none "$T_TABLE3_HEAD" "${QCXR[@]}" "${T3[@]}" --backbone none \
  --out "$WORK/table3-none" --json

# ---- 3a. statevector: largest n at batch $BATCH in device memory (ascending, first failure ends it)
for n in $SV_NS; do
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 run_cell "sv-n$n" $(( T_SV + 10 )) "${QCXR[@]}" bench quantum \
    --backends statevector --qubits "$n" --max-qubits statevector 64 --batch "$BATCH" \
    --warmup "$SV_WARMUP" --steps "$SV_STEPS" --timeout "$T_SV" --out "$WORK/quantum" --json \
    || break
  grep -q '"error"' "$WORK/sv-n$n.out" && break
done
# ---- 3b. mps at 26, 45, 100 qubits
run_cell mps $(( T_MPS * $(echo $MPS_NS | wc -w) + 10 )) "${QCXR[@]}" bench quantum \
  --backends mps --qubits $MPS_NS --batch "$BATCH" --warmup "$MPS_WARMUP" --steps "$MPS_STEPS" \
  --timeout "$T_MPS" --out "$WORK/quantum" --json
# ---- 4a. frozen-feature extraction at 224 px
run_cell features-f32 "$T_FEAT" "$PY" benchmarks/features_throughput.py \
  --batch-size "$FEAT_BATCH" --batches "$FEAT_BATCHES" --dtype float32
run_cell features-bf16 "$T_FEAT" "$PY" benchmarks/features_throughput.py \
  --batch-size "$FEAT_BATCH" --batches "$FEAT_BATCHES" --dtype bfloat16

# ---- report
say "writing the report"
REPORT_ARGS=(--work "$WORK" --wall-s $(( $(date +%s) - START )))
[ -n "$REPORT" ] && REPORT_ARGS+=(--out "$REPORT")
[ "$REHEARSAL" = 1 ] && REPORT_ARGS+=(--rehearsal)
REPORT_PATH=$("$PY" benchmarks/gpu_bench.py "${REPORT_ARGS[@]}" 2>>"$LOG")
say "report: $REPORT_PATH (raw: $WORK)"
if [ -n "${OUT:-}" ]; then  # device tool: at most 8 files come back
  cp "$REPORT_PATH" "${REPORT_PATH%.md}.json" "$LOG" "$OUT/" 2>/dev/null
  tar -czf "$OUT/gpu-raw.tar.gz" -C "$(dirname "$WORK")" "$(basename "$WORK")"
fi
