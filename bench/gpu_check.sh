#!/usr/bin/env bash
# `make gpu-check` (issue 13): everything a lent GPU box (an H200) should do, in
# one call of at most 8 minutes, every stage under its own time limit:
#
#   stage   limit  what
#   build   145 s  TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 setup.py build_ext --inplace
#                  (the package is then used through PYTHONPATH)
#   env      15 s  versions, backends, nvidia-smi: is the CUDA build there?
#   tests    75 s  the CUDA tests: `-k cuda` (the -m cuda files and every fused
#                  test's cuda parameter), then `-k triton` on the GPU, then the
#                  torch.compile training steps, each with the time still left
#   grid    110 s  python -m bench.gpu_grid (starts no work after 95 s): issue 14's
#                  row losses vs F.cross_entropy first (~50 s with Triton JIT), then
#                  the elementwise losses (~50 s), then torch.compile rows while time
#                  is left (few); the deadline trims from the end of that order
#   linear   50 s  python -m bench.linear_head (starts no measurement after 38 s):
#                  issue 15's fused linear heads vs F.linear + the loss, bf16, at
#                  (8192, 1024, 131072) then (4096, 768, 670000), then ASL; torch.compile
#                  only where 45 s are left (so not here), GEMMs alone per case
#   ncu      65 s  python -m bench.ncu (ncu itself limited to 55 s)
#   total   460 s  + at most 3 s of kill grace per stage (6 x 3) = 478 s <= 480 s
#
# A stage that overruns is interrupted (SIGINT, so pytest still prints its
# summary; SIGKILL 3 s later) and the next stage starts: what the others wrote
# stays. Results and logs go to bench/results/ (RESULTS=... to change) and,
# when $OUT is set (the device tool's return folder), are copied there after
# every stage. GPU_CHECK_DRY=1 prints the stages and their limits, runs nothing.
# A copied tree's .git may be stale: pass the commit as BENCH_COMMIT=<hash>.
#
# Outputs: gpu-check.log (this script's story), gpu-check-stages.md (limit, time
# and status per stage), gpu-{build,env,grid,linear,ncu}.log, gpu-tests-{cuda,triton,
# compile}.log (pytest's summary and its 15 slowest tests, to size the next run),
# <device>-grid.{csv,md,png} (bench/gpu_grid.py), linear-head-<device>.{csv,md}
# (bench/linear_head.py), <device>-ncu.{csv,md},
# <device>-ncu-raw.csv, -ncu.log and -ncu-plan.json (bench/ncu.py).
set -u
cd "$(dirname "$0")/.." || exit 1
RESULTS=${RESULTS:-bench/results}
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
BUILD_S=${BUILD_TIMEOUT:-145}
ENV_S=${ENV_TIMEOUT:-15}
TEST_S=${TEST_TIMEOUT:-75}
GRID_S=${GRID_TIMEOUT:-110}
LINEAR_S=${LINEAR_TIMEOUT:-50}
NCU_S=${NCU_TIMEOUT:-65}
KILL_S=3
TOTAL_S=${GPU_CHECK_TOTAL:-478}  # a stage's limit is cut to what is left of this
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # the tests' conftest sets it only where there is no GPU
# nvcc and ncu live in /usr/local/cuda/bin on most boxes; setup.py finds CUDA_HOME from nvcc.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="$PATH:/usr/local/cuda/bin"
fi
if [ -z "${BENCH_COMMIT:-}" ] && command -v git >/dev/null 2>&1; then
    BENCH_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || true)
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && BENCH_COMMIT="$BENCH_COMMIT+dirty"
fi
export BENCH_COMMIT=${BENCH_COMMIT:-unknown}

LOG=$RESULTS/gpu-check.log
STAGES=$RESULTS/gpu-check-stages.md
if [ "$DRY" = 1 ]; then
    LOG=/dev/null
else
    mkdir -p "$RESULTS"
    : >"$LOG"
    printf '| stage | limit s | took s | status |\n|---|---|---|---|\n' >"$STAGES"
    STAMP=$(mktemp)  # files newer than this were written by this run
fi
say() { echo "$*" | tee -a "$LOG"; }
copy_out() {
    [ "$DRY" = 1 ] || [ -z "${OUT:-}" ] && return 0
    mkdir -p "$OUT" 2>/dev/null || return 0
    find "$RESULTS" -maxdepth 1 -type f -newer "$STAMP" -exec cp -p {} "$OUT"/ \; 2>/dev/null
    cp -p "$LOG" "$STAGES" "$OUT"/ 2>/dev/null
    return 0
}
trap 'say "!! interrupted"; copy_out; exit 130' INT TERM

# run_stage NAME LIMIT LOGFILE CMD...: CMD under `timeout`, output to LOGFILE.
run_stage() {
    local name=$1 limit=$2 logfile=$3 start rc status
    shift 3
    [ $((TOTAL_S - SECONDS - KILL_S)) -lt "$limit" ] && limit=$((TOTAL_S - SECONDS - KILL_S))
    if [ "$limit" -lt 5 ]; then
        say "--- $name: skipped (the whole run's ${TOTAL_S} s are spent)"
        echo "| $name | 0 | 0 | skipped |" >>"$STAGES"
        return 0
    fi
    say "=== $name (limit ${limit} s; $(date -u +%T), ${SECONDS} s in)"
    if [ "$DRY" = 1 ]; then
        echo "    would run: $* > $logfile"
        return 0
    fi
    start=$SECONDS
    timeout -s INT -k "$KILL_S" "$limit" "$@" >"$logfile" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="TIMED OUT" ;;
        *) status="exit $rc" ;;
    esac
    say "--- $name: $status after $((SECONDS - start)) s (log: $logfile)"
    echo "| $name | $limit | $((SECONDS - start)) | $status |" >>"$STAGES"
    copy_out
    return 0
}

# Test files, the few GPU-only ones first (pytest keeps the order of files named on
# its command line, not of a folder's): the scale kernel, the no-sync check, the
# CUDA battery (graphs, autocast, memory, determinism), then every other file.
ordered_tests() {
    local first="tests/test_scale_grad.py tests/test_strict.py tests/test_conformance_cuda.py" f
    for f in $first; do [ -f "$f" ] && echo "$f"; done
    for f in tests/test_*.py; do
        case " $first " in *" $f "*) ;; *) echo "$f" ;; esac
    done
}

# The CUDA tests, most telling first, each group with the stage's time still left.
tests_stage() {
    local end=$((SECONDS + TEST_S)) left group k parallel="" start rc status
    if [ "$DRY" != 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
        parallel="-n ${TEST_WORKERS:-8}"
    fi
    # -k also matches file names and markers: "cuda" takes the -m cuda files and the
    # fused tests' cuda parameters; test_cuda_compile.py (nvcc sm_80/90, which the
    # build did) and the torch.compile steps (seconds each) are left for later.
    for group in "cuda:cuda and not cuda_compile and not compile_fullgraph and not sass" \
                 "triton:triton and not cuda and not sass" \
                 "compile:compile_fullgraph"; do
        k=${group#*:}
        group=${group%%:*}
        left=$((end - SECONDS))
        if [ "$DRY" != 1 ] && [ "$left" -lt 15 ]; then
            say "--- tests -k \"$k\": skipped (${left} s of the stage left)"
            echo "| tests $group | 0 | 0 | skipped |" >>"$STAGES"
            continue
        fi
        say "=== tests -k \"$k\" (limit ${left} s of ${TEST_S} s; ${SECONDS} s in)"
        if [ "$DRY" = 1 ]; then
            echo "    would run: $PY -m pytest <tests/test_*.py, GPU-only files first> -q -p no:cacheprovider -rfE --tb=short --durations=15 -k \"$k\" > $RESULTS/gpu-tests-$group.log"
            continue
        fi
        start=$SECONDS
        # shellcheck disable=SC2086
        timeout -s INT -k "$KILL_S" "$left" "$PY" -m pytest $(ordered_tests) -q \
            -p no:cacheprovider -rfE --tb=short --durations=15 $parallel -k "$k" \
            >"$RESULTS/gpu-tests-$group.log" 2>&1
        rc=$?
        case $rc in 0) status=ok ;; 124|137) status="TIMED OUT" ;; *) status="exit $rc" ;; esac
        say "--- tests $group: $status after $((SECONDS - start)) s: $(grep -E "(passed|failed|skipped|error|deselected|no tests ran)" "$RESULTS/gpu-tests-$group.log" | tail -1)"
        grep -E "^(FAILED|ERROR) " "$RESULTS/gpu-tests-$group.log" | head -25 | tee -a "$LOG"
        echo "| tests $group | $left | $((SECONDS - start)) | $status |" >>"$STAGES"
        copy_out
    done
}

if [ "$DRY" = 1 ]; then
    echo "GPU_CHECK_DRY=1: stages and limits only; nothing runs."
    echo "budget: build $BUILD_S + env $ENV_S + tests $TEST_S + grid $GRID_S + linear $LINEAR_S + ncu $NCU_S = $((BUILD_S + ENV_S + TEST_S + GRID_S + LINEAR_S + NCU_S)) s (+ ${KILL_S} s kill grace per stage)"
fi
say "gpu-check: commit $BENCH_COMMIT, python $PY, results in $RESULTS${OUT:+, copied to $OUT}"

run_stage build "$BUILD_S" "$RESULTS/gpu-build.log" \
    env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PY" setup.py -q build_ext --inplace
# Without ninja torch builds one file at a time (MAX_JOBS is ninja's), far over the limit.
[ "$DRY" = 1 ] || grep -iE "error|not built|slow distutils|warning: fused_losses" \
    "$RESULTS/gpu-build.log" | head -15 | tee -a "$LOG"

run_stage env "$ENV_S" "$RESULTS/gpu-env.log" "$PY" -m bench._gpu_env
if [ "$DRY" != 1 ]; then
    cat "$RESULTS/gpu-env.log" >>"$LOG"
    grep -q "NO CUDA DEVICE" "$RESULTS/gpu-env.log" && say "!! no CUDA device: CUDA tests skip, grid and ncu have nothing to time"
fi

tests_stage
run_stage grid "$GRID_S" "$RESULTS/gpu-grid.log" \
    "$PY" -m bench.gpu_grid --out "$RESULTS" --deadline-s $((GRID_S - 15))
run_stage linear "$LINEAR_S" "$RESULTS/gpu-linear.log" \
    "$PY" -m bench.linear_head --out "$RESULTS" --deadline-s $((LINEAR_S - 12))
run_stage ncu "$NCU_S" "$RESULTS/gpu-ncu.log" \
    "$PY" -m bench.ncu --out "$RESULTS" --timeout $((NCU_S - 10))
[ -f "$RESULTS/gpu-ncu.log" ] && [ "$DRY" != 1 ] && tail -25 "$RESULTS/gpu-ncu.log" >>"$LOG"
say "=== done after ${SECONDS} s"
if [ "$DRY" != 1 ]; then
    cat "$STAGES" | tee -a "$LOG"
    copy_out
    rm -f "$STAMP"
fi
exit 0
