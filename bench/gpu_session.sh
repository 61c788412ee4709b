#!/usr/bin/env bash
# The GPU checks, sized for a lent GPU machine (minutes of device time, no network). The device
# tool's H100/H200 machines have CuPy, PyTorch, NumPy, scikit-learn and pytest; nitihw is not
# installed there and nothing can be fetched. From the repository root:
#
#   ./run gpu-wheels                    # here, with network: mlxtend into .wheelhouse/
#   # there, carrying .wheelhouse (the device tool's carry), from the repository root:
#   NITIHW_GIT_REV=<commit> bash bench/gpu_session.sh [all|tests|bench|long]
#
# What it does, in order, each step under its own time limit (the whole well under 8 minutes):
#   1. environment.txt: nvidia-smi, versions (Python, NumPy, CuPy, CUDA runtime, NVRTC, cuBLAS,
#      PyTorch), the commit;
#   2. smoke check: gpu_available() builds one kernel with NVRTC and runs one int8 cuBLAS GEMM;
#      exit 3 ("GPU unusable") if that fails, so that skipped GPU tests are never read as passed;
#   3. tests.txt: the `cuda` tests only (-k cuda). Golden's side is not trained here: the
#      training tests compare with tests/gpu_golden.json, computed on the CPU beforehand;
#   4. bench.txt, profile.txt, gpu_speed.md: bench/gpu_speed.py (speed against PyTorch, int8
#      GEMM TOPS, a profile of one step); benchmarks.md, the updated docs file.
# `long` (on its own: a call of its own) runs instead the whole NITI and WAGE LeNet/mnist5k runs
# (30 epochs each) and 24 vgg-small-7 steps at batch 256, each against the full hash and every
# epoch's accuracies golden gave on the CPU (tests/gpu_golden_long.json): long.txt, one block
# per case with its arguments, steps, accuracy, expected and actual hash, MATCH or MISMATCH.
# Results go to $OUT (the device tool's result folder), or ./gpu-results elsewhere. A copied
# checkout has no .git: NITIHW_GIT_REV names the commit in the results.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in tests | bench | all | long) ;; *) echo "usage: $0 [tests|bench|all|long]" >&2; exit 2 ;; esac
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
TESTS_LIMIT="${NITIHW_GPU_TESTS_LIMIT:-140}"  # seconds (run 2: 82 s)
BENCH_LIMIT="${NITIHW_GPU_BENCH_LIMIT:-240}"  # the bench starts nothing after BENCH_LIMIT - 40
LONG_LIMIT="${NITIHW_GPU_LONG_LIMIT:-400}"
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do  # nvcc, for the CUDA compile test
    [ -x "$d/nvcc" ] && ! command -v nvcc >/dev/null && export PATH="$d:$PATH"
done

# The repository root is the package nitihw: make it importable without installing it.
site="$(mktemp -d)"
ln -s "$PWD" "$site/nitihw"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import mlxtend" 2>/dev/null; then
    if compgen -G ".wheelhouse/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --target "$site" .wheelhouse/*.whl || exit 1
    else
        echo "warning: no mlxtend and no .wheelhouse/ (run ./run gpu-wheels here first and" \
            "carry .wheelhouse): the mnist5k runs will fail" >&2
    fi
fi

t0=$SECONDS
{
    date -u
    nvidia-smi || echo "nvidia-smi: not found"
    "$PY" - <<'EOF' || true
import sys, numpy
print("python", sys.version.split()[0], "numpy", numpy.__version__)
try:
    import cupy
    from cupy_backends.cuda.libs import cublas
    rt = cupy.cuda.runtime
    print("cupy", cupy.__version__, "CUDA runtime", rt.runtimeGetVersion(),
          "driver", rt.driverGetVersion(), "NVRTC", cupy.cuda.nvrtc.getVersion(),
          "cuBLAS", cublas.getVersion(cupy.cuda.device.get_cublas_handle()))
    print("device", rt.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    print("cupy:", type(exc).__name__, exc)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
          torch.backends.cudnn.version())
except Exception as exc:
    print("torch:", type(exc).__name__, exc)
EOF
    command -v nvcc >/dev/null && nvcc --version | tail -2
    echo "commit ${NITIHW_GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} 2>&1 | tee "$OUT/environment.txt"
timeout 120 "$PY" -c '
from nitihw.gpu.backend import gpu_available
ok, why = gpu_available()
print("GPU usable (NVRTC kernel build and int8 cuBLAS GEMM checked)" if ok else
      f"GPU not usable: {why}")
raise SystemExit(0 if ok else 3)' 2>&1 | tee -a "$OUT/environment.txt"
smoke=${PIPESTATUS[0]}
echo "smoke check: exit $smoke after $((SECONDS - t0)) s" | tee -a "$OUT/environment.txt"
[ "$smoke" -eq 0 ] || exit 3

rc=0
if [ "$what" = long ]; then
    timeout "$LONG_LIMIT" "$PY" -m pytest tests/test_gpu.py -m gpu_long -k cuda \
        -p no:cacheprovider -rA -q --durations=5 2>&1 | tee "$OUT/long.txt"
    rc=${PIPESTATUS[0]}
    echo "long: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/long.txt"
    exit "$rc"
fi
if [ "$what" != bench ]; then
    timeout "$TESTS_LIMIT" "$PY" -m pytest tests/test_gpu.py tests/test_cupy_standin.py -k cuda \
        -p no:cacheprovider -rs -q --durations=15 2>&1 | tee "$OUT/tests.txt"
    rc=${PIPESTATUS[0]}
    echo "tests: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/tests.txt"
fi
if [ "$what" != tests ]; then
    timeout "$BENCH_LIMIT" "$PY" bench/gpu_speed.py --profile-out "$OUT/profile.txt" \
        --md-out "$OUT/gpu_speed.md" --deadline $((BENCH_LIMIT - 40)) 2>&1 | tee "$OUT/bench.txt"
    r=${PIPESTATUS[0]}
    echo "bench: exit $r after $((SECONDS - t0)) s" | tee -a "$OUT/bench.txt"
    [ "$rc" -eq 0 ] && rc=$r
    cp docs/benchmarks.md "$OUT/"
fi
exit "$rc"
