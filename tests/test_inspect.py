"""The inspection report on a tiny generated dataset with hand-made CAMs and masks: per-image scores equal
eval_*'s for a split of that image alone, the dataset figures equal eval_*'s, the JSON behind the page sorts
and filters as expected, missing stages and empty splits are notes, and the --id panel."""
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cam.archive import save_cam
from pipeline.data.image_files import save_mask
from pipeline.errors import DataError
from pipeline.report.page import filter_rows, sort_rows
from stages import data, eval_cam, eval_pseudo, inspect, synthetic
from stages.common import open_split
from stages.config import load_params
from conftest import REPO


def _params(tmp_path, *overrides):
    return load_params(REPO / "params.yaml", [
        f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
        "synthetic.num_train=6", "synthetic.num_val=2", "synthetic.image_size=48", "workers=1",
        "eval_cam.threshold_step=0.05", *overrides,
    ])


def _fake_cams(params, method="cam", seed=0):
    """CAMs from the ground truth with noise (class k's map high inside its object)."""
    rng = np.random.default_rng(seed)
    dataset, index = open_split(params, params.data.train_split)
    out = Path(params.paths.outputs) / "cam" / method
    for image_id in dataset.ids:
        gt = dataset.load_mask(image_id)
        keys = np.array(index["splits"][params.data.train_split]["labels"][image_id], dtype=np.int64)
        cams = np.stack([np.clip((gt == k) * 0.7 + rng.uniform(0, 0.5, gt.shape), 0, 1) for k in keys]) \
            if len(keys) else np.zeros((0,) + gt.shape)
        save_cam(out / f"{image_id}.npz", cams, keys)
    return dataset


def _fake_pseudo(params, dataset, bad_id, method="cam"):
    """Pseudo masks equal to the ground truth except ``bad_id``, which is all background."""
    out = Path(params.paths.outputs) / "crf" / method
    for image_id in dataset.ids:
        gt = dataset.load_mask(image_id)
        save_mask(out / f"{image_id}.png", np.zeros_like(gt) if image_id == bad_id else gt)


@pytest.fixture
def built(tmp_path):
    params = _params(tmp_path)
    synthetic.run(params)
    data.run(params)
    dataset = _fake_cams(params)
    bad = dataset.ids[2]
    _fake_pseudo(params, dataset, bad)
    cam_metrics = eval_cam.run(params)
    pseudo_metrics = eval_pseudo.run(params)
    result = inspect.run(params)
    out = Path(params.paths.outputs) / "inspect" / "cam"
    report = json.loads((out / "data" / "index.json").read_text())
    return params, dataset, bad, cam_metrics, pseudo_metrics, result, report, out


def test_report_files_and_dataset_figures_equal_eval(built):
    params, dataset, bad, cam_metrics, pseudo_metrics, result, report, out = built
    assert (out / "index.html").is_file() and (out / "report.js").is_file()
    assert "http://" not in (out / "index.html").read_text() and "https://" not in (out / "report.js").read_text()
    train = [r for r in report["rows"] if r["split"] == "train"]
    assert sorted(r["id"] for r in train) == sorted(dataset.ids)
    assert len(report["rows"]) == 6 + 2 and report["splits"]["val"]["count"] == 2
    for row in report["rows"]:
        assert (out / "thumbs" / f"{row['id']}.jpg").is_file() and (out / "data" / "img" / f"{row['id']}.js").is_file()
    summary = report["splits"]["train"]
    assert report["cam_threshold"] == cam_metrics["best_threshold"]
    assert summary["miou"]["cam"] == pytest.approx(cam_metrics["miou"], abs=1e-6)
    assert summary["miou"]["pseudo"] == pytest.approx(pseudo_metrics["miou"], abs=1e-6)
    per_class = pseudo_metrics.get("per_class_iou") or _per_class_file(params, "eval_pseudo")
    assert summary["per_class"]["pseudo"] == [per_class[c] for c in report["classes"]]
    assert [s["key"] for s in report["stages"]] == ["cam", "pseudo"]
    assert report["gains"] == ["pseudo-cam"]
    assert report["curve"]["threshold"][0] == 0.0


def _per_class_file(params, stage):
    rows = (Path(params.paths.outputs) / stage / params.method / "per_class.csv").read_text().splitlines()[1:]
    return {name: (None if value == "" else float(value)) for name, value in (r.split(",") for r in rows)}


def test_per_image_miou_equals_eval_of_that_image_alone(built, tmp_path):
    params, dataset, bad, *_, report, out = built
    rows = {r["id"]: r for r in report["rows"]}
    assert rows[bad]["scores"]["pseudo"] < 1.0
    root = Path(params.data.root)
    for image_id in (dataset.ids[0], bad):
        (root / "ImageSets" / "Segmentation" / "single.txt").write_text(image_id + "\n")
        single = _params(tmp_path, "data.train_split=single", "data.val_split=single",
                         f"eval_cam.threshold_min={report['cam_threshold']}",
                         f"eval_cam.threshold_max={report['cam_threshold']}")
        data.run(single)
        assert rows[image_id]["scores"]["cam"] == pytest.approx(eval_cam.run(single)["miou"], abs=1e-6)
        assert rows[image_id]["scores"]["pseudo"] == pytest.approx(eval_pseudo.run(single)["miou"], abs=1e-6)


def test_sort_and_filters_give_the_expected_ids(built):
    _, dataset, bad, _, _, _, report, _ = built
    rows = report["rows"]
    train = [r for r in rows if r["split"] == "train"]
    # every pseudo mask but one equals the ground truth: only that one is worse than its CAM
    assert [r["id"] for r in filter_rows(rows, worse=True)] == [bad]
    assert all(r["scores"]["pseudo"] == 1.0 for r in train if r["id"] != bad)
    assert rows[0]["id"] == bad and rows == sort_rows(rows)  # worst first by default
    finals = [r["final"] for r in rows if r["final"] is not None]
    assert finals == sorted(finals)
    by_cam = [r["id"] for r in sort_rows(rows, "cam", descending=True)]
    cams = [r["scores"]["cam"] for r in sorted(train, key=lambda r: by_cam.index(r["id"]))]
    assert cams == sorted(cams, reverse=True) and set(by_cam[len(train):]) == {r["id"] for r in rows if r["split"] == "val"}
    labels = {r["id"]: r["classes"] for r in rows}
    for c in range(1, len(report["classes"])):
        assert {r["id"] for r in filter_rows(rows, class_index=c)} == {i for i, cl in labels.items() if c in cl}
    assert {r["id"] for r in filter_rows(rows, split="val")} == {r["id"] for r in rows if r["split"] == "val"}


def test_missing_stages_are_notes_and_empty_splits_say_so(tmp_path):
    params = _params(tmp_path)
    synthetic.run(params)
    data.run(params)
    inspect.run(params)  # nothing but the data: every stage is a note
    out = Path(params.paths.outputs) / "inspect" / "cam"
    report = json.loads((out / "data" / "index.json").read_text())
    notes = " ".join(report["notes"])
    for hint in ("wsss-pipe cam --method cam", "wsss-pipe crf", "wsss-pipe walk affinitynet", "wsss-pipe eval-seg"):
        assert hint in notes
    assert report["stages"] == [] and len(report["rows"]) == 8
    _fake_cams(params)  # CAMs without eval_cam: shown unscored, with a note
    inspect.run(params)
    report = json.loads((out / "data" / "index.json").read_text())
    assert [s["key"] for s in report["stages"]] == ["cam"] and "eval-cam" in " ".join(report["notes"])
    assert all("cam" not in r["scores"] for r in report["rows"])

    index_path = Path(params.paths.outputs) / "data" / "index.json"
    index = json.loads(index_path.read_text())
    for split in index["splits"].values():  # an index of empty splits (e.g. an empty train_aug list)
        split["ids"], split["labels"] = [], {}
    index_path.write_text(json.dumps(index))
    inspect.run(params)
    report = json.loads((out / "data" / "index.json").read_text())
    assert report["rows"] == [] and any("no images" in n for n in report["notes"])


def test_methods_side_by_side(built):
    params, dataset, bad, *_ = built
    _fake_cams(params, method="seam", seed=1)
    _fake_pseudo(params, dataset, bad, method="seam")
    inspect.run(params)
    out = Path(params.paths.outputs) / "inspect" / "cam"
    assert json.loads((out / "data" / "index.json").read_text())["methods"] == ["cam", "seam"]
    image = (out / "data" / "img" / f"{dataset.ids[0]}.js").read_text()
    payload = json.loads(image[len("inspectImage("):-len(");\n")])
    assert [m["method"] for m in payload["methods"]] == ["cam", "seam"]
    assert payload["methods"][0]["scores"]["pseudo"] == 1.0 and "cam" not in payload["methods"][1]["scores"]


def test_single_image_panel_and_its_errors(built, tmp_path):
    from PIL import Image

    from stages.cli import app

    params, dataset, *_ = built
    path = inspect.panel(params, dataset.ids[0], str(tmp_path / "panel.png"))
    picture = np.asarray(Image.open(path))
    # image + one CAM per label + CAM label map + pseudo mask + ground truth, and a legend below
    labels = len(open_split(params, "train")[1]["splits"]["train"]["labels"][dataset.ids[0]])
    assert picture.shape[1] == (4 + labels) * 48 + (3 + labels) * 4 and picture.shape[0] > 48 + 14
    with pytest.raises(DataError, match="--id nope"):
        inspect.panel(params, "nope")
    result = CliRunner().invoke(app, ["inspect", "--params", str(REPO / "params.yaml"), "--id", "nope",
                                      "--set", f"paths.outputs={params.paths.outputs}",
                                      "--set", f"data.root={params.data.root}"])
    assert result.exit_code == 2 and "--id nope" in result.output


def test_bad_inspect_params_are_one_line_errors(tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="inspect.cam_threshold"):
        _params(tmp_path, "inspect.cam_threshold=2")
    with pytest.raises(ConfigError, match="inspect.thumb_size"):
        _params(tmp_path, "inspect.thumb_size=0")


def _fake_walk(params, dataset, name="irn", method="cam", seed=2):
    """Walked label maps: the ground truth with a random block of each image set to background."""
    rng = np.random.default_rng(seed)
    out = Path(params.paths.outputs) / "walk" / name / method
    for image_id in dataset.ids:
        label = dataset.load_mask(image_id).copy()
        y, x = rng.integers(0, label.shape[0] // 2, size=2)
        label[y:y + label.shape[0] // 2, x:x + label.shape[1] // 2] = 0
        save_mask(out / f"{image_id}.png", label)


def _payload(out, image_id):
    text = (out / "data" / "img" / f"{image_id}.js").read_text()
    return json.loads(text[len("inspectImage("):-len(");\n")])


def test_irn_walk_row_equals_eval_walk_and_the_pseudo_gain_follows_crf_source(built, tmp_path):
    from stages import eval_walk

    params, dataset, bad, *_, report, out = built
    assert "irn" not in [s["key"] for s in report["stages"]]
    assert any("IRN walk" in n and "wsss-pipe walk irn --method cam" in n for n in report["notes"])
    _fake_walk(params, dataset)
    irn = _params(tmp_path, "crf.source=irn")
    metrics = eval_walk.run(irn, "irn")
    inspect.run(irn)
    report = json.loads((out / "data" / "index.json").read_text())
    assert [s["key"] for s in report["stages"]] == ["cam", "irn", "pseudo"]
    assert report["splits"]["train"]["miou"]["irn"] == pytest.approx(metrics["miou"], abs=1e-6)
    assert report["lineage"]["pseudo"] == "irn" and report["gains"] == ["irn-cam", "pseudo-irn"]
    rows = {r["id"]: r for r in report["rows"]}
    for image_id in dataset.ids:
        scores = rows[image_id]["scores"]
        assert rows[image_id]["gains"] == {"irn-cam": pytest.approx(scores["irn"] - scores["cam"], abs=2e-6),
                                           "pseudo-irn": pytest.approx(scores["pseudo"] - scores["irn"], abs=2e-6)}
    assert "irn" in _payload(out, dataset.ids[0])["masks"]
    # with AffinityNet's walk selected instead, the pseudo mask's gain is against that walk
    _fake_walk(params, dataset, name="affinitynet", seed=3)
    inspect.run(_params(tmp_path, "crf.source=affinitynet"))
    report = json.loads((out / "data" / "index.json").read_text())
    assert [s["key"] for s in report["stages"]] == ["cam", "affinitynet", "irn", "pseudo"]
    assert report["gains"] == ["affinitynet-cam", "irn-cam", "pseudo-affinitynet"]
    # the known answer: a row's IRN-walk mIoU is eval_walk's on a split of that image alone
    root = Path(params.data.root)
    for image_id in (dataset.ids[0], bad):
        (root / "ImageSets" / "Segmentation" / "single.txt").write_text(image_id + "\n")
        single = _params(tmp_path, "data.train_split=single", "data.val_split=single")
        data.run(single)
        assert rows[image_id]["scores"]["irn"] == pytest.approx(eval_walk.run(single, "irn")["miou"], abs=1e-6)


def test_scribbles_and_single_stage_prediction_panels(built, tmp_path):
    from PIL import Image

    from pipeline.data.image_files import load_mask
    from pipeline.report.assets import encode
    from stages import scribbles
    from stages.segmentation_models import single_tag

    params, dataset, bad, *_, report, out = built
    notes = " ".join(report["notes"])
    assert "wsss-pipe scribbles" in notes and "wsss-pipe eval-single --method cam" in notes
    assert "scribbles" not in _payload(out, dataset.ids[0])["masks"]
    assert all("single" not in r["scores"] for r in report["rows"])
    before = np.asarray(Image.open(inspect.panel(params, dataset.ids[0], str(tmp_path / "before.png")))).shape[1]

    scribbles.run(params)
    val, _ = open_split(params, params.data.val_split)
    pred = Path(params.paths.outputs) / "eval_single" / single_tag(params) / "pred"
    for image_id in val.ids:  # the first val image predicted perfectly, the other as all background
        gt = val.load_mask(image_id)
        save_mask(pred / f"{image_id}.png", gt if image_id == val.ids[0] else np.zeros_like(gt))
    inspect.run(params)
    report = json.loads((out / "data" / "index.json").read_text())
    notes = " ".join(report["notes"])
    assert "wsss-pipe scribbles" not in notes and "wsss-pipe eval-single" not in notes
    assert [s["key"] for s in report["stages"]] == ["cam", "pseudo", "single"]
    rows = {r["id"]: r for r in report["rows"]}
    assert rows[val.ids[0]]["scores"]["single"] == 1.0 and rows[val.ids[1]]["scores"]["single"] < 1.0
    assert rows[val.ids[1]]["final"] == rows[val.ids[1]]["scores"]["single"]
    assert not any(k.startswith("single") for r in report["rows"] for k in r["gains"])  # not a refinement
    for image_id in dataset.ids:  # the scribble labels, at the view size (48 px: unchanged), 255 kept
        scribble = load_mask(Path(params.paths.outputs) / "scribbles" / f"{image_id}.png")
        assert (scribble == 255).any() and _payload(out, image_id)["masks"]["scribbles"] == encode(scribble)
    assert "single" in _payload(out, val.ids[0])["masks"] and "scribbles" not in _payload(out, val.ids[0])["masks"]
    after = np.asarray(Image.open(inspect.panel(params, dataset.ids[0], str(tmp_path / "after.png")))).shape[1]
    assert after == before + 48 + 4  # one more panel: the scribbles
