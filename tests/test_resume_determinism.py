"""Deterministic on CPU: the same seed gives byte-identical artifacts and metrics on the tiny pipeline
(wall-clock timings excepted)."""
import json
from pathlib import Path

from conftest import REPO


def _tiny(tmp_path: Path, outputs: str):
    from stages.config import load_params

    return load_params(REPO / "params.yaml", [
        f"paths.outputs={tmp_path / outputs}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
        "synthetic.num_train=8", "synthetic.num_val=2", "synthetic.image_size=48",
        "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
        "train_cls.batch_size=4", "train_cls.crop_size=48", "train_cls.epochs=2", "train_cls.resume_every=1",
        "cam.scales=[1.0,0.5]", "crf.bg_threshold=0.3", "workers=1", "seed=11",
    ])


def _without_timings(path: Path) -> bytes:
    if path.suffix != ".json":
        return path.read_bytes()
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not (k == "seconds" or k.endswith("_seconds"))}
    return json.dumps(data, sort_keys=True).encode()


def test_same_seed_gives_byte_identical_artifacts_and_metrics(tmp_path):
    from stages import cam, crf, data, eval_cam, eval_pseudo, synthetic, train_cls

    synthetic.run(_tiny(tmp_path, "a"))
    results = []
    for outputs in ("a", "b"):
        params = _tiny(tmp_path, outputs)
        data.run(params)
        train_metrics = train_cls.run(params)
        cam.run(params)
        eval_cam.run(params)
        crf.run(params)
        eval_pseudo.run(params)
        root = tmp_path / outputs
        files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
        results.append((root, files, train_metrics))
    (a, files_a, metrics_a), (b, files_b, metrics_b) = results
    assert files_a == files_b
    assert {Path("train_cls/cam/model.pt"), Path("train_cls/cam/history.csv"), Path("eval_cam/cam/metrics.json"),
            Path("eval_pseudo/cam/metrics.json")} <= set(files_a)
    assert sum(1 for f in files_a if f.suffix == ".npz") == 8 and sum(1 for f in files_a if f.suffix == ".png") == 8
    for name in files_a:
        assert _without_timings(a / name) == _without_timings(b / name), str(name)
    assert {k: v for k, v in metrics_a.items() if k != "seconds"} == \
        {k: v for k, v in metrics_b.items() if k != "seconds"}
    assert not (a / ".resume").exists() and not (b / ".resume").exists()
