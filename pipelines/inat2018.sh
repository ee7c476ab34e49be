#!/usr/bin/env bash
# Reproduce iNaturalist 2018 end to end: prepare -> encode-text -> train (lift, sage) -> report.
#   pipelines/inat2018.sh --root DATA_ROOT [--work DIR] [--methods "lift sage"] [--gpus N] [--dry-run]
# Stages whose artifacts already match their inputs are skipped; a killed training resumes.
source "$(dirname "$0")/_lib.sh"
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
parse_args "$@"
WORK="${WORK:-runs/inat2018}"
require_root "iNaturalist 2018" "Get the iNaturalist 2018 images (github.com/visipedia/inat_comp, 2018) and iNaturalist18_{train,val}.txt (LIFT / Decoupling); categories.json from the same release gives the species names, which LIFT's label order (sorted names) needs." iNaturalist18_train.txt iNaturalist18_val.txt
run_pipeline inat2018 "--root '$ROOT'" "$SAGE_REPO/sage_cli/presets/inat2018.yaml"
