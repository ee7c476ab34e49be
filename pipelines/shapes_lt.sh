#!/usr/bin/env bash
# Shapes-LT, the embedded world: no download, runs on a CPU. prepare -> encode-text (shipped toy
# CLIP) -> train (linear, lift, sage) -> report.
#   pipelines/shapes_lt.sh [--work DIR] [--methods "linear lift sage"] [--dry-run]
# EXTRA_TRAIN_ARGS (e.g. "--max-steps 5") is appended to every sage train call.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
METHODS="linear lift sage"
parse_args "$@"
WORK="${WORK:-runs/shapes_lt}"
MODEL="sage-toy"
PRETRAINED="$SAGE_REPO/sage_cli/assets/sage_toy_v2.safetensors"  # toy CLIP v2, world v3's model (docs/world.md)
DEVICE="${DEVICE:-cpu}"
TEMPLATES="${TEMPLATES:-single}"  # the demo's text cache (sage demo): LIFT's single template since world v3
run_pipeline shapes-lt "" "$SAGE_REPO/sage_cli/presets/shapes_lt.yaml"
