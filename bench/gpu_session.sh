#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU and no network: the device tool's H100/H200
# machines have CuPy, PyTorch, NumPy, scikit-learn and pytest installed; nitihw is not, and
# nothing can be fetched there. From the repository root:
#
#   ./run gpu-wheels                    # here, with network: the wheels the GPU machine lacks
#   bash bench/gpu_session.sh tests     # there, carrying .wheelhouse: GPU tests against golden
#   bash bench/gpu_session.sh bench     # there: bench/gpu_speed.py (writes docs/benchmarks.md)
#
# "all" (the default) does both. Logs, and docs/benchmarks.md after a bench, are copied to $OUT
# (the device tool's result folder), or ./gpu-results elsewhere. A copied checkout has no .git:
# pass the commit as NITIHW_GIT_REV=$(git rev-parse --short HEAD) so that results name it.
# Exits non-zero when the GPU is not usable (so that skipped GPU tests are never taken for
# passed ones) or a step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in tests | bench | all) ;; *) echo "usage: $0 [tests|bench|all]" >&2; exit 2 ;; esac
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

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

{
    nvidia-smi || echo "nvidia-smi: not found"
    "$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
    "$PY" -c 'import cupy; print("cupy", cupy.__version__)' || true
    "$PY" -c 'import torch; print("torch", torch.__version__)' || true
    echo "commit ${NITIHW_GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} 2>&1 | tee "$OUT/environment.txt"
"$PY" -c '
from nitihw.gpu.backend import gpu_available
ok, why = gpu_available()
print("GPU usable" if ok else f"GPU not usable: {why}")
raise SystemExit(0 if ok else 3)' 2>&1 | tee -a "$OUT/environment.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 3

rc=0
if [ "$what" != bench ]; then
    "$PY" -m pytest tests/test_gpu.py tests/test_cupy_standin.py -p no:cacheprovider -rs -q \
        2>&1 | tee "$OUT/tests.txt"
    rc=${PIPESTATUS[0]}
fi
if [ "$what" != tests ]; then
    "$PY" bench/gpu_speed.py 2>&1 | tee "$OUT/bench.txt"
    r=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] && rc=$r
    cp docs/benchmarks.md "$OUT/"
fi
exit "$rc"
