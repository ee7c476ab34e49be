#!/usr/bin/env bash
# benchmarks/gpu/run.sh: the one-shot GPU benchmark (under 8 minutes on one H100/H200).
#   benchmarks/gpu/run.sh [--out DIR]        the `gpu` tests, then every figure (bench_gpu.py), one JSON each
#   benchmarks/gpu/run.sh --dry-run          print the plan (figures, sizes) and exit
#   benchmarks/gpu/run.sh --cpu-smoke        every figure, tiny, on the CPU (tests/benchmarks/test_gpu_script.py)
# Needs: the sage environment (.venv, or SAGE_PYTHON), one CUDA GPU; no network (random weights).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${SAGE_PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
out="gpu-bench"
mode=full
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; args+=("$1" "$2"); shift 2 ;;
        --dry-run) mode=dry; args+=("$1"); shift ;;
        --cpu-smoke) mode=smoke; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
export HF_HUB_OFFLINE=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$mode" == full ]]; then
    mkdir -p "$out"
    echo "run.sh: the gpu tests" >&2
    start=$SECONDS
    set +e
    (cd "$root" && "$python" -m pytest -m gpu -q -p no:cacheprovider tests) > "$out/gpu_tests.log" 2>&1
    rc=$?
    set -e
    summary="$(tail -1 "$out/gpu_tests.log")"
    printf '{"figure": "gpu_tests", "exit_code": %d, "summary": "%s", "wall_s": %d}\n' \
        "$rc" "${summary//\"/\'}" "$((SECONDS - start))" > "$out/gpu_tests.json"
    echo "run.sh: gpu tests: $summary" >&2
elif [[ "$mode" == dry ]]; then
    echo "run.sh: would run: $python -m pytest -m gpu tests  ->  $out/gpu_tests.json"
fi
exec "$python" "$here/bench_gpu.py" "${args[@]}"
