"""`wsss-pipe doctor`: a good tree passes; each broken tree of the table is named, one line per problem."""
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stages.cli import app

runner = CliRunner()
CLASSES = ["background", "square", "disc"]
SPLITS = {"train": ["a", "b", "c"], "val": ["d", "e"]}


def _write_tree(root):
    rng = np.random.default_rng(0)
    for directory in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / directory).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, ids in SPLITS.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for image_id in ids:
            image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg")
            mask = np.zeros((12, 16), dtype=np.uint8)
            mask[2:6, 3:9], mask[0, 0] = 1, 255
            _save_grey(root / "SegmentationClass" / f"{image_id}.png", mask)
    return root


def _doctor(root, *extra):
    return runner.invoke(app, ["doctor", "--set", f"data.root={root}", "--set", "backbone.name=tiny",
                               "--set", "backbone.pretrained=none", "--set", "device=cpu", *extra],
                         env={"COLUMNS": "200"})


def test_good_tree_is_ready_with_counts(tmp_path):
    result = _doctor(_write_tree(tmp_path / "voc"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ready" in out and "problem" not in result.stderr
    assert "3 from classes.txt: background, square, disc" in out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "3 ids, 3 images, 3 masks" in lines["split train"] and "2 ids, 2 images, 2 masks" in lines["split val"]
    assert "dense CRF" in out and "pydensecrf runs" in out and "python" in out and "torch" in out
    assert "no imagenet: tiny (selected)" in out and "none (pascal_2012_scribble/ absent)" in out


def _save_grey(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)


def _mask(root, image_id, array):
    _save_grey(root / "SegmentationClass" / f"{image_id}.png", array)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


def _scribbles(root, bad):
    (root / "pascal_2012_scribble").mkdir()
    for image_id in SPLITS["train"]:
        _save_grey(root / "pascal_2012_scribble" / f"{image_id}.png", np.full((12, 16), 255))
    bad(root / "pascal_2012_scribble" / "b.png")


BROKEN = {  # case: (break the tree, the file named, what the line says)
    "missing image": (lambda r: (r / "JPEGImages" / "b.jpg").unlink(), "JPEGImages/b.jpg", "image not found"),
    "unreadable image": (lambda r: (r / "JPEGImages" / "d.jpg").write_bytes(b"\xff\xd8 not a jpeg"),
                         "JPEGImages/d.jpg", "unreadable image"),
    "truncated image": (lambda r: _truncate(r / "JPEGImages" / "a.jpg"), "JPEGImages/a.jpg", "unreadable image"),
    "mask of the wrong size": (lambda r: _mask(r, "c", np.zeros((12, 15))), "SegmentationClass/c.png",
                               "mask size 15x12 differs"),
    "mask value outside the classes": (lambda r: _mask(r, "e", np.full((12, 16), 3)), "SegmentationClass/e.png",
                                       "mask value 3 is neither a class index 0..2 nor 255"),
    "missing mask": (lambda r: (r / "SegmentationClass" / "a.png").unlink(), "SegmentationClass/a.png",
                     "mask not found"),
    "unreadable mask": (lambda r: (r / "SegmentationClass" / "d.png").write_bytes(b"garbage"),
                        "SegmentationClass/d.png", "unreadable mask"),
    "missing split file": (lambda r: (r / "ImageSets" / "Segmentation" / "val.txt").unlink(),
                           "ImageSets/Segmentation/val.txt", "split file not found"),
    "empty split": (lambda r: (r / "ImageSets" / "Segmentation" / "train.txt").write_text("\n"),
                    "ImageSets/Segmentation/train.txt", "lists no ids"),
    "id listed twice": (lambda r: (r / "ImageSets" / "Segmentation" / "val.txt").write_text("d\ne\nd\n"),
                        "ImageSets/Segmentation/val.txt", "id d is listed twice"),
    "missing mask dir": (lambda r: shutil.rmtree(r / "SegmentationClass"), "SegmentationClass",
                         "no masks for split 'train' nor Annotations/"),
    "bad classes.txt": (lambda r: (r / "classes.txt").write_text("background\nsquare\nsquare\n"), "classes.txt",
                        "class names must be unique"),
    "scribble of the wrong size": (lambda r: _scribbles(r, lambda p: _save_grey(p, np.zeros((5, 5)))),
                                   "pascal_2012_scribble/b.png", "scribble size 5x5 differs"),
    "missing scribble": (lambda r: _scribbles(r, lambda p: p.unlink()), "pascal_2012_scribble/b.png",
                         "scribble not found"),
    "missing root": (lambda r: shutil.rmtree(r), "voc", "dataset root not found"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_tree_names_every_problem(tmp_path, case):
    root = _write_tree(tmp_path / "voc")
    breaks, named, says = BROKEN[case]
    breaks(root)
    result = _doctor(root)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("error: ") and "problem" in lines[-1]
    problems = [line for line in lines if line.startswith("problem: ")]
    assert len(problems) == len(lines) - 1  # one line per problem, then the error line
    assert any(named in line and says in line for line in problems), (case, problems)
    assert "problem(s)" in result.stdout  # the screen says it too


def test_problem_lines_are_capped_per_split(tmp_path):
    root = _write_tree(tmp_path / "voc")
    for image_id in SPLITS["train"]:
        _mask(root, image_id, np.full((12, 16), 9))
    result = _doctor(root, "--limit", "2")
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 3 and problems[-1] == "problem: ... and 1 more problems in split 'train'"


def test_missing_imagenet_weights_of_the_selected_backbone_is_a_problem(tmp_path, monkeypatch):
    from pipeline.models.backbones import weights

    root = _write_tree(tmp_path / "voc")
    monkeypatch.setattr(weights, "imagenet_weights",
                        lambda name: (False, "nowhere") if name == "resnet50" else (None, "n/a"))
    result = runner.invoke(app, ["doctor", "--set", f"data.root={root}", "--set", "backbone.name=resnet50",
                                 "--set", "backbone.pretrained=imagenet"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "problem: backbone: resnet50 with pretrained: imagenet, but its weights are not here: nowhere" \
        in result.stderr


def test_cuda_asked_for_but_not_seen_is_a_problem(monkeypatch):
    import torch

    from pipeline.engine import environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, amp = environment.device("cuda")
    assert device.found.startswith("cpu") and "no CUDA device" in device.problem and amp.problem is None
    assert environment.device("auto")[0].problem is None


def test_dense_crf_that_imports_but_fails_is_a_problem(monkeypatch):
    from pipeline.engine import environment
    from pipeline.pseudo_masks import crf

    def broken(*args, **kwargs):
        raise RuntimeError("illegal instruction in the lattice")

    assert environment.dense_crf().problem is None  # the real one runs and keeps the confident labels
    monkeypatch.setattr(crf, "dense_crf", broken)
    check = environment.dense_crf()
    assert "fails to run (illegal instruction in the lattice)" in check.problem
