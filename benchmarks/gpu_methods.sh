#!/usr/bin/env bash
# Issue 18's GPU part: `bash benchmarks/msrc.sh methods-224` (cam, seam, ppl, ppl_fusion, cpn, cpn_per_class,
# ppl_fusion_ctrl and the two term ablations at the CAM baseline's schedule: crop 224, 12 epochs, batch 16 on
# the 351 MSRC train photos), with its JSON lines and per-class CSVs returned in $OUT. On the 2-core CPU a SEAM
# run takes about 2 h and a CPN run about 5 h (benchmarks/README.md, "CAM methods side by side"),
# so these rows wait for a GPU. Prepare as for gpu_check.sh (`bash benchmarks/gpu_wheels.sh`), then:
#     run(command="bash benchmarks/gpu_methods.sh", carry=["wheels", "gpu_data"], timeout_s=600)
# ONLY="seam cpn" narrows it to msrc.sh's variant names (e.g. those a call cut by the time limit left undone).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULT=${OUT:-gpu_methods_out}
WHEELS=${GPU_CHECK_WHEELS:-wheels}
export MSRC_ROOT=${GPU_CHECK_DATA:-gpu_data/msrc_objects}
[[ -d "$MSRC_ROOT" ]] || MSRC_ROOT=../shared/data/msrc_objects
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" BENCH_OUT=${BENCH_OUT:-/tmp/gpu_methods}
mkdir -p "$RESULT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/wsss_site \
      "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/wsss_site"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
before=$(wc -l < benchmarks/results/methods_224.jsonl 2>/dev/null || echo 0)
status=0
ONLY=${ONLY:-} bash benchmarks/msrc.sh methods-224 || status=$?
tail -n "+$((before + 1))" benchmarks/results/methods_224.jsonl > "$RESULT/methods_224.jsonl" || true
find "$BENCH_OUT" -path '*eval_cam*' -name per_class.csv | while read -r f; do
  name=${f#"$BENCH_OUT"/}; cp "$f" "$RESULT/${name//\//_}"
done
echo "methods-224 on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu): exit $status;" \
     "$(wc -l < "$RESULT/methods_224.jsonl") rows in $RESULT/methods_224.jsonl"
exit "$status"
