# Shared helpers for the reproduction scripts. Source it; do not run it.
#
# Every script accepts:
#   --dry-run        print the commands instead of running them
#   --work DIR       where the artifacts go (default: runs/<benchmark>)
#   --root DIR       the dataset root (or the DATA_ROOT environment variable)
#   --methods "..."  methods to train (default: "lift sage")
#   --gpus N         train on N GPUs of this machine with torchrun (default 1: one process)
# and these environment variables: SAGE (the sage command; default: sage if on PATH, else
# ./sagew sage), MODEL (default ViT-B-16), PRETRAINED (default openai), DEVICE (default auto),
# EXTRA_TRAIN_ARGS (appended to every sage train call, e.g. "--max-steps 20"), TORCHRUN (the
# torchrun command for --gpus; default: torchrun if on PATH, else the one in .venv).
set -euo pipefail

SAGE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
WORK=""
ROOT="${DATA_ROOT:-}"
METHODS="lift sage"
GPUS=1
MODEL="${MODEL:-ViT-B-16}"
PRETRAINED="${PRETRAINED:-openai}"
DEVICE="${DEVICE:-auto}"
EXTRA_TRAIN_ARGS="${EXTRA_TRAIN_ARGS:-}"
POSITIONAL=()

if [[ -z "${SAGE:-}" ]]; then
    if command -v sage >/dev/null 2>&1; then SAGE="sage"; else SAGE="$SAGE_REPO/sagew sage"; fi
fi

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --work) WORK="$2"; shift ;;
            --root) ROOT="$2"; shift ;;
            --methods) METHODS="$2"; shift ;;
            --gpus) GPUS="$2"; shift
                    [[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --gpus needs a positive integer, got '$GPUS'" >&2; exit 2; } ;;
            -h|--help) usage; exit 0 ;;
            -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
            *) POSITIONAL+=("$1") ;;
        esac
        shift
    done
}

# Print a command; run it unless --dry-run.
run() {
    echo "+ $*"
    [[ "$DRY_RUN" == 1 ]] || eval "$@"
}

# require_root NAME HINT FILE...: the data root must exist and hold FILEs, else say what to get.
require_root() {
    local name="$1" hint="$2"; shift 2
    if [[ -z "$ROOT" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then ROOT="/path/to/$name"; return 0; fi
        echo "error: no data root for $name: pass --root DIR or set DATA_ROOT. $hint" >&2
        exit 2
    fi
    [[ "$DRY_RUN" == 1 ]] && return 0
    local missing=()
    for f in "$@"; do [[ -e "$ROOT/$f" ]] || missing+=("$f"); done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "error: $ROOT lacks ${missing[*]} for $name. $hint" >&2
        exit 2
    fi
}

# has_checkpoint RUN_DIR: true when sage train left a checkpoint there (checkpoints/last.json
# names the newest; step-NNNNNNNN/state.pt are the checkpoints themselves).
has_checkpoint() {
    [[ -f "$1/checkpoints/last.json" ]] || compgen -G "$1/checkpoints/step-*/state.pt" >/dev/null
}

# train_method METHOD PRESET: train one method; resume a killed run; skip a finished one.
train_method() {
    local method="$1" preset="$2" run_dir="$WORK/runs/$1" resume=""
    if [[ -d "$run_dir" && ! -f "$run_dir/train.json" ]]; then
        if has_checkpoint "$run_dir"; then
            echo "# $run_dir holds a checkpoint of an interrupted run: resuming it"
            resume="--resume"
        elif [[ -n "$(ls -A "$run_dir")" ]]; then
            echo "# $run_dir holds an interrupted run killed before its first checkpoint: starting it over"
            resume="--force"
        fi
    fi
    run "$(train_command) --prepared '$WORK/prepared' --text-cache '$WORK/text' --method $method" \
        "--config '$preset' --device $DEVICE --out '$run_dir' $resume $EXTRA_TRAIN_ARGS"
}

# train_command: `sage train`, or torchrun over --gpus processes (same images per step).
train_command() {
    if [[ "$GPUS" == 1 ]]; then echo "$SAGE train"; return; fi
    local torchrun="${TORCHRUN:-}"
    if [[ -z "$torchrun" ]]; then
        if command -v torchrun >/dev/null 2>&1; then torchrun="torchrun"; else torchrun="$SAGE_REPO/.venv/bin/torchrun"; fi
    fi
    echo "$torchrun --standalone --nproc-per-node $GPUS -m sage_cli train"
}

# run_pipeline DATASET PREPARE_ARGS PRESET: the four stages. The head's text init uses LIFT's single
# template "a photo of a {}." unless TEMPLATES names another set (shapes_lt.sh: the demo's ensemble).
run_pipeline() {
    local dataset="$1" prepare_args="$2" preset="$3" runs=()
    run "$SAGE prepare $dataset $prepare_args --out '$WORK/prepared'"
    run "$SAGE encode-text --prepared '$WORK/prepared' --model '$MODEL' --pretrained '$PRETRAINED'" \
        "--templates ${TEMPLATES:-single}" \
        "--device $DEVICE --out '$WORK/text'"
    for method in $METHODS; do
        train_method "$method" "$preset"
        runs+=("'$WORK/runs/$method'")
    done
    run "$SAGE report ${runs[*]} --zero-shot '$WORK/prepared' --text-cache '$WORK/text'" \
        "--device $DEVICE --out '$WORK/report'"
    echo "report: $WORK/report/report.html (tables: $WORK/report/report.md)"
}
