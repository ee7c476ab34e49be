#!/usr/bin/env bash
# Pretrain the embedded toy CLIP (sage-toy) on the balanced, clean shapes world: the recipe of the
# weights shipped in sage_cli/assets/sage_toy.safetensors (68.5% clean / 12.1% shifted zero-shot).
#   pipelines/pretrain_toy.sh [--work DIR] [--dry-run]
# About an hour on 2 CPU cores (4,000 AdamW steps of 128 pairs); deterministic on one machine.
# To ship new weights, copy WORK/sage_toy.safetensors and WORK/pretrain.json into sage_cli/assets/.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
WORK="${WORK:-runs/toy_clip}"
run "$SAGE pretrain-toy --out '$WORK' --steps 4000 --batch-size 128 --lr 0.001 --seed 0 --threads 2" \
    "--eval-per-class 20 --device cpu"
echo "weights: $WORK/sage_toy.safetensors (record: $WORK/pretrain.json)"
