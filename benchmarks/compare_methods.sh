#!/usr/bin/env bash
# CAM methods side by side on the same data and backbone, driven by DVC: one `dvc exp run` per method up to
# eval_cam (outputs land in per-method directories, so all four coexist), then the table.
#
#   bash benchmarks/compare_methods.sh                         # the built-in synthetic dataset
#   bash benchmarks/compare_methods.sh -S data.root=/path/VOC  # any extra `dvc exp run` arguments
set -euo pipefail
cd "$(dirname "$0")/.."
for method in ${METHODS:-cam seam ppl cpn}; do
  dvc exp run eval_cam -S "method=$method" "$@"
done
wsss-pipe compare
