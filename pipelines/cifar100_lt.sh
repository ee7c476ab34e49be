#!/usr/bin/env bash
# Reproduce CIFAR-100-LT end to end: prepare -> encode-text -> train (lift, sage) -> report.
#   pipelines/cifar100_lt.sh [IR] --root cifar-100-python [--work DIR] [--methods "lift sage"] [--gpus N] [--dry-run]
# IR is the imbalance ratio (default 100; 50 and 10 are the usual others). Stages whose artifacts
# already match their inputs are skipped; a killed training resumes.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
IR="${POSITIONAL[0]:-100}"
WORK="${WORK:-runs/cifar100_lt_ir$IR}"
require_root "CIFAR-100" "Get the python version of CIFAR-100 (cifar-100-python.tar.gz from www.cs.toronto.edu/~kriz/cifar.html), unpack it, and pass the cifar-100-python folder (holding train, test, meta)." train test meta
run_pipeline cifar100-lt "--root '$ROOT' --imbalance-ratio $IR" "$SAGE_REPO/sage_cli/presets/cifar100_lt.yaml"
