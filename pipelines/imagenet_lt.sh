#!/usr/bin/env bash
# Reproduce ImageNet-LT end to end: prepare -> encode-text -> train (lift, sage) -> report.
#   pipelines/imagenet_lt.sh --root DATA_ROOT [--work DIR] [--methods "lift sage"] [--gpus N] [--dry-run]
# Stages whose artifacts already match their inputs are skipped; a killed training resumes.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
WORK="${WORK:-runs/imagenet_lt}"
require_root "ImageNet-LT" "Get ImageNet (ILSVRC-2012) train/val images from image-net.org and the ImageNet_LT_{train,val,test}.txt split files (Liu et al., OLTR / the LIFT repository); put the split files in the root beside train/ and val/." ImageNet_LT_train.txt ImageNet_LT_val.txt ImageNet_LT_test.txt train val
run_pipeline imagenet-lt "--root '$ROOT'" "$SAGE_REPO/sage_cli/presets/imagenet_lt.yaml"
