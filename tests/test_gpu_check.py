"""benchmarks/gpu_check.sh's CPU dry run (GPU_CHECK_DRY=1): the whole script, the same stage list as on the
GPU with the tiny backbone and generated images, so that the first GPU slot does not find it broken; and the
real plan's expected GPU time within the 8 minutes it is sized for."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cam.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

pytestmark = pytest.mark.slow


def test_real_plan_is_sized_within_eight_minutes():
    from gpu_check import LIMIT_SECONDS, REAL, estimate_seconds, plan

    estimate = estimate_seconds(REAL)
    assert set(name for name, _, _ in plan()) <= set(estimate)
    assert LIMIT_SECONDS == 480 and estimate["total"] <= LIMIT_SECONDS
    for method in METHODS:  # every CAM method at the papers' scale
        assert f"train_cls/{method}" in estimate
    assert REAL["train_cls.crop_size"] == 448 and REAL["backbone.output_stride"] == 8
    assert REAL["train_seg.crop_size"] == 321


def test_dry_run_writes_one_record_with_every_stage(tmp_path):
    env = dict(os.environ, GPU_CHECK_DRY="1", OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    from gpu_check import plan

    assert record["dry"] is True and list(record["stages"]) == [name for name, _, _ in plan()]
    for name, entry in record["stages"].items():
        assert entry["seconds"] >= 0 and entry["images_per_s"] > 0, name
    for name in ("eval_cam/seam", "eval_walk@affinitynet/cam", "eval_walk@irn/cam", "eval_pseudo/cam", "eval_seg/pseudo", "eval_seg/gt"):
        entry = record["stages"][name]
        assert 0.0 <= entry["miou"] <= 1.0 and entry["split"] and entry["protocol"], name
    assert record["stages"]["eval_seg/gt"]["split"] == "val"
    assert "skipped" in record["cuda_tests"]  # no GPU here: the cuda tests ran and skipped
    assert "images/s" in result.stdout and "mIoU" in result.stdout
