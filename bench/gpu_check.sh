#!/usr/bin/env bash
# Everything a lent GPU box should do, in one call (`make gpu-check`):
# install with the CUDA kernels, run the CUDA-marked tests and then the whole
# suite, then the GPU benchmarks. Logs and results go to bench/results/ and,
# when $OUT is set (the device tool's return folder), are copied there too.
# Each stage has a time limit so one slow stage cannot eat the others' output.
# When the tree was copied to the GPU box with a stale .git, pass the commit:
# BENCH_COMMIT=<hash> make gpu-check.
set -u
RESULTS=bench/results
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log="$RESULTS/gpu-check.log"
: >"$log"
stage() { echo "=== $* ($(date -u +%T), ${SECONDS}s)" | tee -a "$log"; }

stage "build (in place; the package is used through PYTHONPATH)"
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
    "$PY" setup.py -q build_ext --inplace >"$RESULTS/gpu-build.log" 2>&1
grep -i "error\|not built" "$RESULTS/gpu-build.log" | head -20 | tee -a "$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, triton, fused_losses as f; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(), 'backends', f.available_backends('cuda'))" 2>&1 | tee -a "$log"

parallel=""
"$PY" -c "import xdist" 2>/dev/null && parallel="-n ${TEST_WORKERS:-12}"
# The whole suite: the -m cuda files and every fused-backend parity test's
# cuda parameters (which carry no marker) run here.
stage "tests (all, CUDA included)"
timeout "${TEST_TIMEOUT:-270}" "$PY" -m pytest -q -rfE -p no:logging $parallel tests \
    >"$RESULTS/gpu-tests.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$RESULTS/gpu-tests.log" | tail -60 | tee -a "$log"
stage bench
timeout "${BENCH_TIMEOUT:-300}" "$PY" -m bench.run --out "$RESULTS" ${BENCH_ARGS:-} 2>&1 | tee "$RESULTS/gpu-bench.log"
stage done
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp "$log" "$RESULTS/gpu-bench.log" "$RESULTS/gpu-build.log" "$RESULTS/gpu-tests.log" "$OUT"/ 2>/dev/null
    cp "$RESULTS"/*h100*.csv "$RESULTS"/*h100*.png "$RESULTS"/*h200*.csv "$RESULTS"/*h200*.png "$OUT"/ 2>/dev/null
fi
exit 0
