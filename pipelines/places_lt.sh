#!/usr/bin/env bash
# Reproduce Places-LT end to end: prepare -> encode-text -> train (lift, sage) -> report.
#   pipelines/places_lt.sh --root DATA_ROOT [--work DIR] [--methods "lift sage"] [--gpus N] [--dry-run]
# Stages whose artifacts already match their inputs are skipped; a killed training resumes.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
WORK="${WORK:-runs/places_lt}"
require_root "Places-LT" "Get Places365-Standard images (places2.csail.mit.edu) and the Places_LT_{train,val,test}.txt split files (OLTR / LIFT); the paths in the split files are relative to the root." Places_LT_train.txt Places_LT_val.txt Places_LT_test.txt
run_pipeline places-lt "--root '$ROOT'" "$SAGE_REPO/sage_cli/presets/places_lt.yaml"
