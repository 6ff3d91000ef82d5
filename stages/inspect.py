"""Stage ``inspect``: a browsable report of every intermediate artifact of the selected method.

Writes ``outputs/inspect/<method>/`` (open ``index.html`` from disk; no server, no internet): one row per
image of the train split (CAM at the chosen threshold, each propagation method's walk, pseudo mask)
and of the val split (segmentation prediction, single-stage prediction) with its mIoU at every stage present
and the gain/loss between a stage and the one it refines (the pseudo mask against ``crf.source``); per-class
IoU per stage; the CAM threshold curve; which classes appear together in the train split (classes never
alone flagged, CAM IoU beside them: :mod:`pipeline.report.cooccurrence`); per image, the CAM of each
labelled class, the walked maps, the pseudo mask, the scribbles (single-stage branch), ground truth and
predictions, a threshold slider, changed-pixel views, and the other methods' CAMs and pseudo masks where
their outputs exist. Stages whose outputs are missing are skipped with a note.

``wsss-pipe inspect --id ID`` writes a single image's panel as a PNG instead (``panel``).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from pipeline.cam.methods import METHODS
from pipeline.engine import distributed
from pipeline.engine.atomic import read_json
from pipeline.errors import DataError, WsssError
from pipeline.report.assets import inspect_image
from pipeline.report.page import finish_rows, palette, sort_rows, split_summary, write_page
from pipeline.report.scores import lineage, stage_names, walk_keys
from stages.common import load_index, num_workers, parallel_map, shared_output, stage_dir
from stages.config import Params
from stages.artifacts import ARTIFACTS, artifact_dir
from stages.table import STAGES as TABLE


def cam_threshold(params: Params, method: str) -> float | None:
    """inspect.cam_threshold, or (auto) eval_cam's best threshold for ``method``; None when unknown."""
    if params.inspect.cam_threshold != "auto":
        return float(params.inspect.cam_threshold)
    path = stage_dir(params, "eval_cam", method) / "metrics.json"
    return float(read_json(path)["best_threshold"]) if path.is_file() else None


def _stage_dirs(params: Params) -> dict[str, Path]:
    return {artifact: artifact_dir(params, artifact) for artifact in ARTIFACTS}


# The command that writes each stage's outputs (for the "skipped" notes).
HINTS = {key: TABLE[artifact.stage].command for key, artifact in ARTIFACTS.items()}


def _artifact(stage: str, directory: Path, image_id: str) -> str | None:
    path = directory / f"{image_id}.{'npz' if stage == 'cam' else 'png'}"
    return str(path) if path.is_file() else None


def _curve(params: Params) -> dict | None:
    path = stage_dir(params, "eval_cam", params.method) / "curve.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("miou") not in (None, "", "nan")]
    return {"threshold": [float(r["threshold"]) for r in rows], "miou": [float(r["miou"]) for r in rows]}


def _cooccurrence(params: Params, index: dict) -> dict | None:
    """The train split's class co-occurrence with eval_cam's per-class IoU (None without that split)."""
    from pipeline.report.cooccurrence import cooccurrence_table

    split = params.data.train_split
    if split not in index["splits"]:
        return None
    per_class = stage_dir(params, "eval_cam", params.method) / "per_class.csv"
    return {"split": split, "rows": cooccurrence_table(index["splits"][split]["labels"], index["classes"], per_class)}


def _jobs(params: Params, out: Path, index: dict) -> tuple[list[dict], list[str], list[str]]:
    """One job per image of the train and val splits, the notes on what is missing, the other methods."""
    from pipeline.data.voc import VOCDataset

    cfg = params.inspect
    dirs = _stage_dirs(params)
    notes = []
    threshold = cam_threshold(params, params.method)
    for stage, directory in dirs.items():
        if not directory.is_dir():
            notes.append(f"{stage_names()[stage]}: {directory} not found (run `wsss-pipe {HINTS[stage]} "
                         f"--method {params.method}`); skipped")
    scribbles = stage_dir(params, "scribbles")
    if not scribbles.is_dir():
        notes.append(f"scribbles: {scribbles} not found (run `wsss-pipe scribbles`); skipped")
    if dirs["cam"].is_dir() and threshold is None:
        notes.append(f"CAM mIoU: no threshold (run `wsss-pipe eval-cam --method {params.method}` or set "
                     "inspect.cam_threshold); CAMs shown unscored")
    others = {}
    if cfg.compare_methods:
        for method in METHODS:
            if stage_dir(params, "cam", method).is_dir():
                others[method] = (stage_dir(params, "cam", method), stage_dir(params, "crf", method),
                                  cam_threshold(params, method))
        if len(others) < 2:
            others = {}
    jobs = []
    for split in dict.fromkeys([params.data.train_split, params.data.val_split]):
        if split not in index["splits"]:
            continue
        labels = index["splits"][split]["labels"]
        if not index["splits"][split].get("ids", labels):
            continue
        dataset = VOCDataset(params.data.root, split, labels=labels)
        for image_id in dataset.ids:
            stages = {s: _artifact(s, d, image_id) for s, d in dirs.items()}
            methods = {}
            for method, (cam_dir, crf_dir, t) in others.items():
                if (cam_dir / f"{image_id}.npz").is_file():
                    methods[method] = {"cam": str(cam_dir / f"{image_id}.npz"), "threshold": t,
                                       "pseudo": _artifact("pseudo", crf_dir, image_id)}
            mask = dataset.mask_path(image_id)
            jobs.append({"id": image_id, "split": split, "out": str(out), "image": str(dataset.image_path(image_id)),
                         "gt": str(mask) if mask is not None and mask.is_file() else None,
                         "labels": list(labels.get(image_id, [])), "num_classes": len(index["classes"]),
                         "threshold": threshold, "thumb_size": cfg.thumb_size, "view_size": cfg.view_size,
                         "stages": stages, "methods": methods,
                         "scribbles": str(scribbles / f"{image_id}.png")
                         if (scribbles / f"{image_id}.png").is_file() else None})
    return jobs, notes, list(others)


def run(params: Params) -> dict:
    index = load_index(params)
    classes = index["classes"]
    n = len(classes)
    started = time.perf_counter()
    with shared_output(stage_dir(params, "inspect", params.method)) as out:
        for sub in ("thumbs", "images", "data/img"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        jobs, notes, methods = _jobs(params, out, index)
        rows, totals = [], {}
        # under torchrun each rank renders its share of the images; rank 0 gathers the rows and writes the page
        mine = distributed.shard(jobs)
        for row, confusions in parallel_map(inspect_image, mine, num_workers(params),
                                            f"inspect [{params.method}]", chunksize=8):
            rows.append(row)
            split_totals = totals.setdefault(row["split"], {})
            for stage, conf in confusions.items():
                split_totals[stage] = split_totals.get(stage, np.zeros((n, n), np.int64)) + conf
        rows = distributed.gather_to_main(rows)
        rank_totals = distributed.gather_to_main([totals])
        if not distributed.is_main():
            return {}
        totals, counts = {}, {}
        for part in rank_totals:
            for split, stages in part.items():
                for stage, conf in stages.items():
                    totals.setdefault(split, {})[stage] = totals.get(split, {}).get(stage, 0) + conf
        for row in rows:
            counts[row["split"]] = counts.get(row["split"], 0) + 1
        parents = lineage(params.crf.source)
        finish_rows(rows, parents)
        names = stage_names()
        present = [s for s in names if any(s in r["scores"] for r in rows)
                   or any(j["stages"][s] for j in jobs)]
        if not rows:
            notes.append("the train and val splits hold no images: nothing to show")
        threshold = cam_threshold(params, params.method)
        data = {
            "title": f"wsss-pipe inspection: {params.method} on {Path(params.data.root).name}",
            "method": params.method,
            "classes": classes,
            "palette": palette(n),
            "stages": [{"key": s, "name": names[s] + (f" @ {threshold:.2f}" if s == "cam" and threshold is not None
                                                        else "")} for s in present],
            # the gains some image has (a val prediction and a train pseudo mask never meet)
            "gains": [f"{s}-{p}" for s, p in parents.items() if any(f"{s}-{p}" in r["gains"] for r in rows)],
            "lineage": parents,
            "walks": walk_keys(),  # the propagation methods (report.js lists their maps from here)
            "stage_names": names,
            "notes": notes,
            "splits": {split: split_summary(totals.get(split, {}), count) for split, count in counts.items()},
            "curve": _curve(params),
            "cooccurrence": _cooccurrence(params, index),
            "cam_threshold": threshold,
            "methods": methods,
            "page_size": params.inspect.page_size,
            "rows": sort_rows(rows),
        }
        write_page(out, data)
    print(f"inspect: {len(rows)} images in {time.perf_counter() - started:.1f} s; open "
          f"{stage_dir(params, 'inspect', params.method) / 'index.html'}")
    return {"num_images": len(rows), "notes": notes}


def panel(params: Params, image_id: str, path: str | None = None) -> Path:
    """One PNG of image ``image_id``: photo, one CAM per labelled class, walked maps, pseudo mask, scribbles,
    ground truth and predictions, titled (with the image's mIoU), with a class-colour legend. Written to ``path`` or
    ``outputs/inspect_panels/<method>/<id>.png`` (outside the DVC-tracked report directory)."""
    from pipeline.data.voc import VOCDataset
    from pipeline.report.panel import make_panel

    index = load_index(params)
    found = [s for s in dict.fromkeys([params.data.train_split, params.data.val_split])
             if s in index["splits"] and image_id in index["splits"][s]["labels"]]
    if not found:
        raise DataError(f"--id {image_id}: not an image of the {params.data.train_split} or "
                        f"{params.data.val_split} split of {params.data.root}")
    dataset = VOCDataset(params.data.root, found[0], labels=index["splits"][found[0]]["labels"])
    stages = {s: _artifact(s, d, image_id) for s, d in _stage_dirs(params).items()}
    if not any(stages.values()):
        raise WsssError(f"--id {image_id}: no CAM, random walk, pseudo mask or prediction of method "
                        f"{params.method} for this image; run `wsss-pipe cam --method {params.method}` first")
    scribbles = stage_dir(params, "scribbles") / f"{image_id}.png"
    picture = make_panel(dataset, image_id, stages, cam_threshold(params, params.method), index["classes"],
                         str(scribbles) if scribbles.is_file() else None)
    target = Path(path) if path else stage_dir(params, "inspect_panels", params.method) / f"{image_id}.png"
    from pipeline.data.image_files import save_image

    save_image(target, picture)
    print(f"inspect: wrote {target}")
    return target
