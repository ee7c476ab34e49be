#!/usr/bin/env bash
# Pretrain toy CLIP v2 (world v2): continue the shipped v1 weights on the open shapes world (plain,
# gradient and mildly textured backgrounds; captions with attributes as well as names). The recipe
# of sage_cli/assets/sage_toy_v2.safetensors (its record: sage_toy_v2.pretrain.json).
#   pipelines/pretrain_toy_v2.sh [--work DIR] [--dry-run]
# About 50 minutes on 1 CPU thread shared with other work (1,500 AdamW steps of 128 pairs); resumable (a checkpoint every
# 250 steps: run it again after an interruption). To ship: copy WORK/sage_toy.safetensors and
# WORK/pretrain.json to sage_cli/assets/sage_toy_v2.safetensors and sage_toy_v2.pretrain.json.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
WORK="${WORK:-runs/toy_clip_v2}"
run "$SAGE pretrain-toy --out '$WORK' --world open --init '$SAGE_REPO/sage_cli/assets/sage_toy.safetensors'" \
    "--steps 1500 --batch-size 128 --lr 0.0005 --seed 0 --threads 1 --eval-per-class 20" \
    "--checkpoint-every 250 --device cpu"
echo "weights: $WORK/sage_toy.safetensors (record: $WORK/pretrain.json)"
