#!/usr/bin/env bash
# benchmarks/gpu/run.sh: the one-shot GPU check (README.md beside this; ~4-5 minutes on one H200).
#   benchmarks/gpu/run.sh --out DIR        every step (bench_gpu.py); DIR gets 5 files, work goes under $TMPDIR
#   benchmarks/gpu/run.sh --dry-run        the plan and its expected wall time; nothing run or installed
#   benchmarks/gpu/run.sh --cpu-smoke --out DIR   every step, tiny, on the CPU (tests/test_gpu_benchmark_script.py)
# Other options go to bench_gpu.py (--work, --force, --budget-s, --fail-figure ...). Its own:
#   --wheels DIR   wheels to install when open_clip is not importable (default: .whl in the repo root)
#   --site DIR     where they are installed, put on PYTHONPATH (default: $TMPDIR/sage-site)
# Python: $SAGE_PYTHON, else the repo's .venv, else python3 (an air-gapped host with torch and no venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${SAGE_PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
wheels="$root/.whl"
site="${TMPDIR:-/tmp}/sage-site"
dry=0
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels|--site)
            [[ $# -ge 2 ]] || { echo "run.sh: $1 needs a folder" >&2; exit 2; }
            if [[ "$1" == --wheels ]]; then wheels="$2"; else site="$2"; fi
            shift 2 ;;
        --dry-run) dry=1; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
# The tree's sage_cli first, then the installed wheels.
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# What must be importable: open_clip and its needs that hosts with torch often lack (README.md).
modules="${SAGE_BENCH_MODULES:-open_clip ftfy wcwidth regex}"

missing_modules() {  # the modules not found (looked up, not imported: no torch import); "import": imported
    "$python" - "${1:-find}" $modules <<'PY'
import importlib, importlib.util, sys
for name in sys.argv[2:]:
    try:
        found = importlib.import_module(name) if sys.argv[1] == "import" else importlib.util.find_spec(name)
    except Exception:
        found = None
    if found is None:
        print(name)
PY
}

missing="$(missing_modules | tr '\n' ' ')"
if [[ -n "${missing// }" ]]; then
    shopt -s nullglob
    found=("$wheels"/*.whl)
    shopt -u nullglob
    if [[ ${#found[@]} -eq 0 ]]; then
        echo "run.sh: ${missing% } not importable by $python and no wheels in $wheels;" \
             "download them where there is a network (benchmarks/gpu/README.md)" >&2
        exit 1
    fi
    if [[ $dry -eq 1 ]]; then
        echo "run.sh: would install ${#found[@]} wheels from $wheels into $site (${missing% } missing)" >&2
    else
        echo "run.sh: ${missing% } missing; installing ${#found[@]} wheels from $wheels into $site" >&2
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "${found[@]}" >&2 \
            || { echo "run.sh: pip could not install the wheels in $wheels into $site" >&2; exit 1; }
        modules="$missing"  # now imported, not only found: a wheel's own need may still be missing
        still="$(missing_modules import | tr '\n' ' ')"
        if [[ -n "${still// }" ]]; then
            echo "run.sh: ${still% } still not importable after installing $wheels; a dependency wheel is missing" \
                 "(benchmarks/gpu/README.md lists them)" >&2
            exit 1
        fi
        names=()
        for wheel in "${found[@]}"; do names+=("$(basename "$wheel")"); done
        export SAGE_BENCH_WHEELS="${names[*]}" SAGE_BENCH_SITE="$site"
    fi
fi
exec "$python" "$here/bench_gpu.py" "${args[@]}"
