"""What DVC shows a user: every plot titled with named axes, every template it names present, and a
`dvc metrics show` table that fits in 120 columns."""
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = {"linear", "simple", "scatter", "scatter_jitter", "smooth", "confusion", "confusion_normalized",
            "bar_horizontal", "bar_horizontal_sorted"}


def _stages() -> dict[str, dict]:
    """dvc.yaml's stages, a ``foreach`` stage expanded into one ``<name>@<item>`` per item (as DVC does)."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            stages[f"{name}@{item}"] = yaml.safe_load(text)
    return stages


def _plots():
    """(stage, path, properties) of every plot entry of dvc.yaml (stage-level and top-level)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in _stages().items():
        for entry in stage.get("plots", []):
            path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            yield name, path, props or {}
    for entry in dvc.get("plots", []):
        path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        yield "top-level", path, props or {}


def test_every_plot_has_a_title_and_named_axes():
    plots = list(_plots())
    assert len(plots) >= 12
    for stage, path, props in plots:
        if stage == "overlays":  # a directory of images: DVC shows them as pictures, no axes
            continue
        where = f"{stage}: {path}"
        assert props.get("title") and "/" not in props["title"] and "$" not in props["title"], where
        assert props.get("x_label"), where
        # a dvclive directory holds one file per metric (step, <metric>): each plot's y axis is that metric
        assert props.get("y_label") or path.endswith("dvclive/plots/metrics"), where
        template = props.get("template", "linear")
        assert template in BUILT_IN or (REPO / ".dvc" / "plots" / f"{template}.json").is_file(), where


def test_custom_templates_are_vega_lite_with_dvc_anchors():
    for path in (REPO / ".dvc" / "plots").glob("*.json"):
        template = json.loads(path.read_text())
        text = path.read_text()
        assert "vega-lite" in template["$schema"], path
        for anchor in ("<DVC_METRIC_DATA>", "<DVC_METRIC_TITLE>", "<DVC_METRIC_X>", "<DVC_METRIC_Y>",
                       "<DVC_METRIC_X_LABEL>", "<DVC_METRIC_Y_LABEL>"):
            assert anchor in text, (path, anchor)


def _metrics_show_width(records: dict[str, dict]) -> int:
    """The width of `dvc metrics show` (dvc.compare.metrics_table, tabulate's plain format) for these files."""
    from dvc.compare import metrics_table

    table = metrics_table({"workspace": {"data": {path: {"data": data} for path, data in records.items()}}})
    from tabulate import tabulate

    text = tabulate(list(table), table.keys(), tablefmt="plain", disable_numparse=True)
    return max(len(line) for line in text.splitlines())


# every figure a stage records, with wide but real-looking values: metrics.json keeps its headline ones
FULL_RECORD = {"method": "seam", "labels": "pseudo", "supervision": "scribble", "miou": 0.123456,
               "best_threshold": 0.72, "all_background_miou": 0.148155, "protocol": "multi_scale_crf",
               "protocol_description": "multi-scale 1,0.5,1.5 + flip + CRF", "miou_single_scale": 0.123456,
               "miou_multi_scale": 0.123456, "miou_multi_scale_crf": 0.123456, "pixel_accuracy": 0.812345,
               "ignored_fraction": 0.123456, "num_images": 10582, "loss": 0.123456, "cls": 0.123456,
               "min": 0.123456, "er": 0.123456, "ecr": 0.123456, "fg_pos": 0.123456, "bg_pos": 0.123456,
               "neg": 0.123456, "val_miou_single_scale": 0.123456, "seconds_per_step": 1.2345,
               "final_terms": {"pce": 0.123456, "dfr": 0.123456}, "seconds": 12345.67}


def _metrics_paths() -> list[str]:
    """dvc.yaml's metrics files with the longest names its parameters allow."""
    from pipeline.cam.methods import METHODS

    values = {"paths.outputs": "outputs", "method": max(METHODS, key=len), "train_seg.labels": "pseudo",
              "single.supervision": "scribble", "single.loss": "dfr"}
    paths = []
    for stage in _stages().values():
        for entry in stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            for key, value in values.items():
                path = path.replace("${" + key + "}", value)
            assert "${" not in path, path
            paths.append(path)
    return paths


def test_dvc_metrics_show_fits_in_120_columns(tmp_path):
    from stages.records import HEADLINE, write_metrics

    records = {}
    for path in _metrics_paths():
        out = tmp_path / Path(path).parent
        out.mkdir(parents=True)
        write_metrics(out, FULL_RECORD)
        records[path] = json.loads((out / "metrics.json").read_text())
        assert set(records[path]) <= set(HEADLINE)
        assert json.loads((out / "details.json").read_text()) == FULL_RECORD
    assert len(records) >= 10 and _metrics_show_width(records) <= 120


@pytest.mark.parametrize("record, kept", [({"loss": "dfr", "seconds": 3.0}, {"seconds": 3.0}),
                                          ({"miou": 0.5, "protocol": "single_scale", "num_images": 3},
                                           {"miou": 0.5, "protocol": "single_scale"})])
def test_headline_keeps_only_its_keys_of_their_type(tmp_path, record, kept):
    from stages.records import write_metrics

    write_metrics(tmp_path, record)
    assert json.loads((tmp_path / "metrics.json").read_text()) == kept


def test_confusion_rows_hold_every_class_pair_with_its_share():
    import numpy as np

    from stages.eval_seg import confusion_rows

    conf = np.array([[90, 10, 0], [0, 0, 0], [1, 0, 3]])  # class 1 absent from ground truth and prediction
    rows = confusion_rows(conf, ["bg", "a", "b"])
    assert [(r["actual"], r["predicted"]) for r in rows] == [(x, y) for x in "bg a b".split() for y in "bg a b".split()]
    share = {(r["actual"], r["predicted"]): r["share"] for r in rows}
    assert share[("bg", "bg")] == 0.9 and share[("bg", "a")] == 0.1 and share[("b", "b")] == 0.75
    assert share[("a", "a")] == 0.0 and sum(r["pixels"] for r in rows) == conf.sum()
