"""Scribbles: the ScribbleSup reader on real files, the generator's invariants, the stage's bad input."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError, WsssError
from pipeline.segmentation.scribbles import generate_scribble, image_rng, read_scribble, scribble_dir
from stages import data, scribbles, synthetic
from stages.config import load_params
from conftest import REPO


def test_reader_reads_the_real_scribblesup_files(shared_data):
    root = shared_data / "scribblesup_sample"
    folder = scribble_dir(root)
    first = read_scribble(folder / "2007_000032.png", (281, 500), 21)
    assert set(np.unique(first)) == {0, 1, 15, 255}
    assert 0.01 < (first != 255).mean() < 0.06
    second = read_scribble(folder / "2007_000033.png", (366, 500), 21)
    assert set(np.unique(second)) == {0, 1, 255}
    # the real strokes lie on their class or on the mask's void border, rarely elsewhere
    gt = np.array(Image.open(root / "SegmentationClassAug" / "2007_000032.png"))
    for cls in (0, 1, 15):
        under = gt[first == cls]
        assert np.isin(under, [cls, 255]).mean() > 0.95


def test_reader_rejects_bad_files(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((4, 5), 255, np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match=r"a.png: scribble size 5x4 differs from the image's 6x4"):
        read_scribble(path, (4, 6), 3)
    bad = np.full((4, 5), 255, np.uint8)
    bad[1, 1] = 7
    Image.fromarray(bad, mode="L").save(path)
    with pytest.raises(DataError, match=r"a.png: scribble value 7 is neither a class index 0..2 nor 255"):
        read_scribble(path, (4, 5), 3)
    with pytest.raises(DataError, match="pascal_2012_scribble: scribble folder not found"):
        scribble_dir(tmp_path)


def blobs_mask():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 10:35] = 1
    mask[20:55, 45:75] = 2
    mask[5:8, 60:78] = 1            # a thin second region of class 1
    mask[38:42, :] = 255            # void band
    return mask


def test_generator_labels_only_inside_the_ground_truth_regions():
    mask = blobs_mask()
    scribble = generate_scribble(mask, width=3, coverage=0.05, rng=image_rng(0, "x"))
    labelled = scribble != 255
    assert (scribble[labelled] == mask[labelled]).all()
    assert set(np.unique(scribble[labelled])) == {0, 1, 2}        # background included, void never
    assert 0.01 < labelled.sum() / (mask != 255).sum() < 0.1
    # every connected region gets a stroke: the thin strip of class 1 too
    assert (scribble[5:8, 60:78] == 1).any()


def test_generator_is_deterministic_per_seed():
    mask = blobs_mask()
    a = generate_scribble(mask, 3, 0.03, image_rng(4, "img"))
    b = generate_scribble(mask, 3, 0.03, image_rng(4, "img"))
    c = generate_scribble(mask, 3, 0.03, image_rng(5, "img"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (generate_scribble(mask, 1, 0.03, image_rng(4, "img")) != 255).sum() < (a != 255).sum()


@pytest.fixture
def tiny(tmp_path):
    def make(*overrides):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            "synthetic.num_train=4", "synthetic.num_val=2", "synthetic.image_size=48", "workers=1", *overrides])
    return make


def test_stage_generates_or_reads_and_fails_cleanly(tiny):
    params = tiny()
    synthetic.run(params)
    data.run(params)
    stats = scribbles.run(params)
    out = Path(params.paths.outputs) / "scribbles"
    assert stats["source"] == "generate" and len(list(out.glob("*.png"))) == 4
    assert 0 < stats["labelled_fraction"] < 0.2
    first = sorted(out.glob("*.png"))[0]
    before = first.read_bytes()
    # source dataset without the folder: one line naming it, the old output untouched
    with pytest.raises(WsssError, match="pascal_2012_scribble: scribble folder not found"):
        scribbles.run(tiny("scribbles.source=dataset"))
    assert first.read_bytes() == before
    # a ScribbleSup folder: auto reads it; one wrong-size file stops the stage, naming that file
    folder = Path(params.data.root) / "pascal_2012_scribble"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("*.json"))
    assert scribbles.run(params)["source"] == "dataset"
    Image.fromarray(np.full((10, 10), 255, np.uint8), mode="L").save(folder / first.name)
    shutil.rmtree(out)
    with pytest.raises(WsssError, match=f"{first.name}: scribble size 10x10 differs"):
        scribbles.run(params)
    assert not out.exists()
