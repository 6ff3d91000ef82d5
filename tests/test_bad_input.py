"""Bad input, as a table: every case is a one-line error naming the culprit, a non-zero exit, and no
partial output of the stage that met it."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO
from stages.cli import app

runner = CliRunner()
TINY = ["synthetic.num_train=4", "synthetic.num_val=2", "synthetic.image_size=48", "backbone.name=tiny",
        "backbone.pretrained=none", "backbone.output_stride=8", "train_cls.epochs=1", "train_cls.batch_size=2",
        "train_cls.crop_size=48", "cam.scales=[1.0]", "cam.loader_workers=0", "workers=1", "crf.bg_threshold=0.3"]


def _invoke(stage: str, root: Path, out: Path, *sets: str):
    items = [f"paths.outputs={out}", f"data.root={root}", f"synthetic.root={root}", *TINY, *sets]
    return runner.invoke(app, [stage, "-p", str(REPO / "params.yaml"), *[a for i in items for a in ("--set", i)]])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A generated dataset with a trained classifier and its CAMs (built once)."""
    base = tmp_path_factory.mktemp("bad_input")
    root, out = base / "syn", base / "out"
    for stage in ("synthetic", "data", "train-cls", "cam"):
        result = _invoke(stage, root, out)
        assert result.exit_code == 0, result.output
    return root, out


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _mask(root: Path, image_id: str, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8), mode="L").save(root / "SegmentationClass" / f"{image_id}.png")


def _split(root: Path, lines: list[str]) -> None:
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{line}\n" for line in lines))


# (name, stage, output that must not appear, culprit in the message, damage(root, out) -> extra --set items)
CASES = [
    ("missing root", "data", "data", "no_such_root", lambda r, o: [f"data.root={r.parent / 'no_such_root'}"]),
    ("missing image", "data", "data", "train_00001",
     lambda r, o: (r / "JPEGImages" / "train_00001.jpg").unlink() or []),
    ("corrupt JPEG", "data", "data", "train_00002.jpg",
     lambda r, o: _truncate(r / "JPEGImages" / "train_00002.jpg", 0.4) or []),
    ("truncated PNG mask", "data", "data", "train_00000.png",
     lambda r, o: _truncate(r / "SegmentationClass" / "train_00000.png", 0.5) or []),
    ("mask of another size", "data", "data", "train_00003",
     lambda r, o: _mask(r, "train_00003", np.zeros((20, 30))) or []),
    ("class index out of range", "data", "data", "train_00001",
     lambda r, o: _mask(r, "train_00001", np.full((48, 48), 77)) or []),
    ("empty split", "data", "data", "train", lambda r, o: _split(r, []) or []),
    ("duplicate ids", "data", "data", "train_00002",
     lambda r, o: _split(r, ["train_00000", "train_00002", "train_00002"]) or []),
    ("unknown params key", "train-cls", "train_cls", "train_cls.lrr", lambda r, o: ["train_cls.lrr=0.1"]),
    ("wrong type", "train-cls", "train_cls", "train_cls.epochs", lambda r, o: ["train_cls.epochs=abc"]),
    ("out-of-range value", "train-cls", "train_cls", "train_cls.lr", lambda r, o: ["train_cls.lr=-1"]),
    ("unknown method", "train-cls", "train_cls", "nope", lambda r, o: ["method=nope"]),
    ("unknown backbone", "train-cls", "train_cls", "resnet_9000", lambda r, o: ["backbone.name=resnet_9000"]),
    # a library argument out of range: the message names the params key it came from
    ("method option out of range", "train-cls", "train_cls", "methods.seam.scale: must be positive and not 1",
     lambda r, o: ["method=seam", "methods.seam.scale=1.0"]),
    ("another method's option", "train-cls", "train_cls", "methods.ppl.lse_r: must be positive",
     lambda r, o: ["method=ppl", "methods.ppl.lse_r=-1.0"]),
    ("truncated CAM", "eval-cam", "eval_cam", "train_00001.npz",
     lambda r, o: _truncate(o / "cam" / "cam" / "train_00001.npz", 0.6) or []),
    ("bit-flipped CAM", "crf", "crf", "train_00002.npz",
     lambda r, o: _flip_bytes(o / "cam" / "cam" / "train_00002.npz") or []),
    ("truncated checkpoint", "cam", "cam", "model.pt",
     lambda r, o: _truncate(o / "train_cls" / "cam" / "model.pt", 0.5) or []),
]


@pytest.mark.parametrize("name, stage, output, culprit, damage", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_a_one_line_error_naming_the_culprit(project, tmp_path, name, stage, output, culprit, damage):
    root, out = project[0], tmp_path / "out"
    if stage == "data":  # damages the dataset: a copy of it (the index of the others names the original)
        root = tmp_path / "syn"
        shutil.copytree(project[0], root)
    shutil.copytree(project[1], out)
    shutil.rmtree(out / output, ignore_errors=True)
    sets = damage(root, out)
    result = _invoke(stage, root, out, *sets)
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert culprit in lines[0], lines[0]
    # nothing published (a per-image stage may keep its hidden keyed work directory for the next run)
    published = [p.name for p in (out / output).iterdir() if not p.name.startswith(".")] if (out / output).exists() else []
    assert not published, published
