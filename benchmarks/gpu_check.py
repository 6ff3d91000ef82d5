"""The stage list of `benchmarks/gpu_check.sh`: MSRC at the papers' scale on short schedules, one process,
each stage timed (images/s), its peak GPU memory and its mIoU recorded, one JSON record at the end.

    python benchmarks/gpu_check.py --out OUT --data gpu_data/msrc_objects      # the GPU run
    python benchmarks/gpu_check.py --out OUT --dry                             # tiny CPU run of the same list

The real plan and its expected GPU time (`estimate_seconds`, sized from benchmarks/README.md's per-step
costs; the sizing is in gpu_check.sh's header) are fixed here; the dry run swaps in the tiny backbone, a
generated 6 + 3 image dataset and one epoch / two steps, and keeps every stage, so that the list cannot rot.
A stage is skipped (recorded as such) once the run has spent ``--budget`` seconds, so the check ends in time
even where the GPU is slower than the sizing assumed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.cam.methods import METHODS  # noqa: E402
from stages.config import load_params  # noqa: E402
from stages.propagation import PROP_STAGES, list_propagation  # noqa: E402
from stages.table import STAGES, resolve  # noqa: E402

# the papers' scale: CAMs at crop 448 / output stride 8 (PSA, SEAM, CPN), DeepLab at crop 321 (SEAM's)
REAL = {
    "backbone.name": "efficientnet_lite0", "backbone.pretrained": "imagenet", "backbone.output_stride": 8,
    "train_cls.crop_size": 448, "train_cls.epochs": 3, "train_cls.batch_size": 16,
    "train_cls.scale_min": 1.0, "train_cls.scale_max": 1.714, "train_cls.loader_workers": 4,
    "cam.loader_workers": 4, "cam.writers": 4,
    # AffinityNet at PSA's grid (params.yaml's demo values differ), the walk and IRN's batch as measured before
    "propagation.affinitynet.train.crop_size": 448, "propagation.affinitynet.train.epochs": 1,
    "propagation.affinitynet.train.loader_workers": 4, "propagation.affinitynet.train.grid_stride": 8,
    "propagation.affinitynet.train.pair_set": "psa", "propagation.affinitynet.train.embed_dim": 448,
    "propagation.affinitynet.walk.beta": 16.0, "propagation.affinitynet.walk.logt": 3,
    "propagation.irn.train.crop_size": 448, "propagation.irn.train.epochs": 1, "propagation.irn.train.loader_workers": 4,
    "propagation.irn.train.batch_size": 16,
    "train_seg.crop_size": 321, "train_seg.steps": 300, "train_seg.batch_size": 10, "train_seg.val_every": 300,
    "train_seg.loader_workers": 4,
    "workers": 0, "resume_every_all": 0,
}
DRY = {
    "backbone.name": "tiny", "backbone.pretrained": "none", "backbone.output_stride": 8,
    "train_cls.crop_size": 64, "train_cls.epochs": 1, "train_cls.batch_size": 4,
    "cam.scales": [1.0, 0.5], "cam.loader_workers": 0, "cam.writers": 0,
    "propagation.affinitynet.train.crop_size": 96, "propagation.affinitynet.train.epochs": 1,
    "propagation.irn.train.crop_size": 96, "propagation.irn.train.epochs": 1, "propagation.irn.train.batch_size": 16,
    "train_seg.crop_size": 64, "train_seg.steps": 2, "train_seg.batch_size": 2, "train_seg.val_every": 2,
    "eval_seg.scales": [1.0, 0.5], "workers": 1, "resume_every_all": 0,
}
RESUMABLE = ("train_cls", *(f"propagation.{name}.train" for name in list_propagation()), "train_seg")


def plan() -> list[tuple[str, str, dict]]:
    """(name, stage, overrides) in order: the four CAM methods, both walks of plain CAM, the CRF pseudo
    masks, DeepLab on the pseudo masks and on ground truth."""
    steps = [("data", "data", {})]
    for method in METHODS:
        for stage in ("train_cls", "cam", "eval_cam"):
            steps.append((f"{stage}/{method}", stage, {"method": method}))
    walks = [f"{stage}@{name}" for name in list_propagation() for stage in PROP_STAGES]  # as dvc.yaml names them
    steps += [(f"{stage}/cam", stage, {"method": "cam"}) for stage in walks]
    steps += [("crf/cam", "crf", {"method": "cam", "crf.source": "cam"}), ("eval_pseudo/cam", "eval_pseudo", {"method": "cam"})]
    for labels in ("pseudo", "gt"):
        for stage in ("train_seg", "eval_seg"):
            steps.append((f"{stage}/{labels}", stage, {"method": "cam", "train_seg.labels": labels}))
    return steps


# GPU seconds per image of each stage at REAL's settings (one H100/H200, AMP), from benchmarks/README.md's
# CPU costs and an assumed GPU speed-up; the per-method factors are the README's "SEAM and CPN cost 2-3x".
#   CAM training: 87 s per step of 16 at crop 448 / stride 8 on one CPU thread (5.4 s per image); x300 on
#   the GPU -> 0.018 s. DeepLab at crop 321: (321/448)^2 of it + the ASPP head (x1.3) -> 0.012 s.
#   Read-outs: the cam stage did 3.4 images/s on 2 threads at stride 16 (4 scales + flip); stride 8 ~3x the
#   work; x100 on the GPU (single images, decode-bound) -> 0.01 s, 0.05 s with decoding and writing.
#   CRFs (host): 25.7 s for 351 images on one worker = 0.073 s per image; 16 cores -> 0.005 s (prop_labels
#   runs two CRFs per image). eval_seg: 5 scales + flip + a CRF per val image -> 0.1 s.
SECONDS_PER_IMAGE = {
    "data": 0.002, "train_cls": 0.018, "cam": 0.05, "eval_cam": 0.005, "prop_labels": 0.01, "train_prop": 0.018,
    "train_prop@irn": 0.012, "walk": 0.03, "eval_walk": 0.002,
    "crf": 0.005, "eval_pseudo": 0.002, "train_seg": 0.012, "eval_seg": 0.1,
}
METHOD_FACTOR = {"cam": 1.0, "ppl": 1.5, "seam": 2.5, "cpn": 3.0}
FIXED_SECONDS = {"wheel install": 20, "cuda tests": 40, "imports and model building": 30}
LIMIT_SECONDS = 480


def images_of(stage: str, params, n_train: int, n_val: int) -> int:
    """The images a stage processes (training: samples seen)."""
    if stage == "data":
        return n_train + n_val
    if stage == "train_cls":  # the last incomplete batch is dropped when there is more than one
        batch = params.train_cls.batch_size
        return params.train_cls.epochs * (n_train if n_train <= batch else n_train // batch * batch)
    if stage.startswith("train_prop@"):
        return params.propagation[stage.partition("@")[2]].train.epochs * n_train
    if stage == "train_seg":
        return params.train_seg.steps * params.train_seg.batch_size
    return n_val if stage == "eval_seg" else n_train


def estimate_seconds(settings: dict, n_train: int = 351, n_val: int = 90) -> dict:
    """Expected GPU seconds of every step of ``plan()`` under ``settings`` (MSRC: 351 train, 90 val)."""
    out = dict(FIXED_SECONDS)
    for name, stage, extra in plan():
        params = load_params(REPO / "params.yaml", _overrides(settings, extra))
        factor = METHOD_FACTOR[params.method] if stage == "train_cls" else 1.0
        rate = SECONDS_PER_IMAGE.get(stage) or SECONDS_PER_IMAGE[stage.partition("@")[0]]
        out[name] = round(images_of(stage, params, n_train, n_val) * rate * factor, 1)
    out["total"] = round(sum(out.values()), 1)
    return out


def _overrides(settings: dict, extra: dict) -> list[str]:
    items = {k: v for k, v in settings.items() if k != "resume_every_all"} | extra
    if "resume_every_all" in settings:
        items |= {f"{stage}.resume_every": settings["resume_every_all"] for stage in RESUMABLE}
    return [f"{k}={json.dumps(v)}" for k, v in items.items()]


def metrics_file(stage: str, params) -> Path | None:
    if stage in STAGES and STAGES[stage].module in ("eval_cam", "eval_walk", "eval_pseudo", "eval_seg"):
        return resolve(STAGES[stage].metrics[0], params)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="outputs and the JSON record go here")
    parser.add_argument("--data", default=str(REPO / "gpu_data" / "msrc_objects"))
    parser.add_argument("--dry", action="store_true", help="tiny CPU run of the same stage list")
    parser.add_argument("--budget", type=float, default=400.0, help="seconds after which stages are skipped")
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out).resolve()
    settings = dict(DRY if args.dry else REAL)
    base = {"paths.outputs": str(out / "outputs"), "device": "auto"}
    if args.dry:
        data_root = out / "synthetic"
        synth = load_params(REPO / "params.yaml", _overrides(settings, base | {
            "synthetic.root": str(data_root), "synthetic.num_train": 6, "synthetic.num_val": 3,
            "synthetic.image_size": 64}))
        importlib.import_module("stages.synthetic").run(synth)
    else:
        data_root = Path(args.data).resolve()
    base["data.root"] = str(data_root)
    cuda = torch.cuda.is_available()
    record = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
              "dry": args.dry, "settings": settings, "estimate_s": estimate_seconds(REAL), "stages": {}}
    print(f"gpu_check: expected GPU time of the real plan {record['estimate_s']['total']:.0f} s "
          f"(limit {LIMIT_SECONDS} s)", flush=True)
    for name, stage, extra in plan():
        params = load_params(REPO / "params.yaml", _overrides(settings, base | extra))
        spent = time.perf_counter() - start
        if spent > args.budget:
            record["stages"][name] = {"skipped": f"budget: {spent:.0f} s spent of {args.budget:.0f}"}
            print(f"{name}: skipped (budget)", flush=True)
            continue
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tick = time.perf_counter()
        module, _, prop_method = stage.partition("@")
        importlib.import_module(f"stages.{module}").run(params, *([prop_method] if prop_method else []))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tick
        index = json.loads((Path(params.paths.outputs) / "data" / "index.json").read_text())
        n_train = len(index["splits"][params.data.train_split]["ids"])
        n_val = len(index["splits"][params.data.val_split]["ids"])
        images = images_of(stage, params, n_train, n_val)
        entry = {"seconds": round(seconds, 2), "images": images, "images_per_s": round(images / max(seconds, 1e-9), 2),
                 "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}
        path = metrics_file(stage, params)
        if path is not None and path.is_file():
            metrics = json.loads(path.read_text())
            entry |= {k: metrics[k] for k in ("miou", "split", "num_images", "protocol") if k in metrics}
        record["stages"][name] = entry
        miou = f", mIoU {100 * entry['miou']:.1f}" if "miou" in entry else ""
        memory = f", peak {entry['peak_gpu_mib']:.0f} MiB" if cuda else ""
        print(f"{name}: {seconds:.1f} s, {entry['images_per_s']:.1f} images/s{memory}{miou}", flush=True)
    tests = out / "cuda_tests.txt"  # written by gpu_check.sh
    if tests.is_file() and tests.read_text().strip():
        record["cuda_tests"] = tests.read_text().strip().splitlines()[-1]
    record["seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({"seconds": record["seconds"], "miou": {k: v["miou"] for k, v in record["stages"].items()
                                                            if "miou" in v}}), flush=True)


if __name__ == "__main__":
    main()
