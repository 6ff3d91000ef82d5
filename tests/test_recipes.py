"""Recipes (recipes/*/*.yaml): every one validates over params.yaml, says what it reproduces, turns into the
same parameters through `dvc exp run -S`, and runs its whole pipeline end to end on two tiny images.

The end-to-end run substitutes exactly: backbone.name=tiny, backbone.pretrained=none (no weights download
here; the recipe's output stride is kept), data.root = a generated 2-image VOC-layout tree whose train_aug,
train and val lists all hold the two images, every training crop = 64 (the images are 80x64) except
AffinityNet's and IRN's, 96 (the smallest whose grid holds PSA's pair set at radius 5 / 10), epochs = 1
(train_cls, train_prop), steps = 2 (train_seg, single, with val_every 2), and, for speed in one
process, workers=1, cam.loader_workers=0, cam.writers=0 and paths.outputs in tmp. Everything else
(batch sizes, learning rates, scales, CRF, walks, heads, thresholds, protocols) is the recipe's.
"""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.image_files import save_mask
from pipeline.errors import ConfigError
from stages.config import Params, load_params, parse_override, read_tree, _set_dotted
from stages.recipes import dvc_overrides, is_single_stage, pipeline_stages, recipe_files

REPO = Path(__file__).resolve().parents[1]
RECIPES = recipe_files()
VOC_RECIPES = [p for p in RECIPES if p.parent.name == "voc"]


def test_the_seven_published_pipelines_have_recipes():
    assert {p.stem for p in VOC_RECIPES} == {"psa", "irn", "seam", "cpn", "ppl", "rloss_scribble", "dfr_scribble"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_validates_and_names_figure_split_protocol_source(recipe):
    params = load_params(REPO / "params.yaml", recipes=[str(recipe)])
    info = params.recipe
    assert info is not None and info.name and info.paper and info.gpu_time
    for figure, detail in info.reproduces.items():
        assert {"value", "split", "protocol", "source"} <= set(detail), figure
    if recipe.parent.name == "voc":
        assert info.reproduces, "a VOC recipe names the figure it should reproduce"
        assert params.data.val_split == "val" and params.data.train_split == "train_aug"


@pytest.mark.parametrize("recipe", VOC_RECIPES, ids=lambda p: p.stem)
def test_dvc_overrides_give_the_same_parameters(recipe):
    tree = read_tree(REPO / "params.yaml")
    for text in dvc_overrides(recipe, REPO / "params.yaml"):
        key, value = parse_override(text.removeprefix("+"))
        _set_dotted(tree, key, value)
    via_dvc = Params.model_validate(tree).model_dump()
    via_overlay = load_params(REPO / "params.yaml", recipes=[str(recipe)]).model_dump()
    via_overlay["recipe"] = None  # metadata is no setting: it stays out of `dvc exp run -S`
    assert via_dvc == via_overlay


def test_overlay_merges_sections_and_names_the_files_in_errors(tmp_path):
    overlay = tmp_path / "r.yaml"
    overlay.write_text("train_cls:\n  epochs: 3\nmethods:\n  seam:\n    scale: 0.5\n")
    params = load_params(REPO / "params.yaml", ["train_cls.lr=0.2"], [str(overlay)])
    base = load_params(REPO / "params.yaml")
    assert params.train_cls.epochs == 3 and params.train_cls.lr == 0.2
    assert params.train_cls.crop_size == base.train_cls.crop_size  # untouched keys of a merged section stay
    assert params.method_options("seam")["scale"] == 0.5
    assert params.method_options("seam")["er_weight"] == base.method_options("seam")["er_weight"]
    overlay.write_text("train_cls:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"params.yaml \+ .*r.yaml: train_cls.epochs"):
        load_params(REPO / "params.yaml", recipes=[str(overlay)])
    with pytest.raises(ConfigError, match="missing.yaml: parameters file not found"):
        load_params(REPO / "params.yaml", recipes=[str(tmp_path / "missing.yaml")])


def test_cli_recipe_command(tmp_path):
    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, ["recipe", str(REPO / "recipes/voc/seam.yaml"), "-p", str(REPO / "params.yaml")])
    assert result.exit_code == 0 and "55.4" in result.output and "VOC12 train (1,464)" in result.output
    assert "stages: data train_cls cam eval_cam prop_labels@affinitynet train_prop@affinitynet walk@affinitynet eval_walk@affinitynet crf" in result.output
    result = CliRunner().invoke(app, ["recipe", str(REPO / "recipes/voc/seam.yaml"), "-p", str(REPO / "params.yaml"),
                                      "--dvc"])
    assert result.output.startswith("dvc exp run -S ") and "-S method=seam" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("propagation:\n  affinitynet:\n    walk:\n      logt: 99\n")
    result = CliRunner().invoke(app, ["recipe", str(bad), "-p", str(REPO / "params.yaml")])
    assert result.exit_code == 2 and "propagation.affinitynet.walk.logt" in result.output


def _two_image_voc(root: Path) -> Path:
    """Two 80x64 photos-to-be: grey with a red (aeroplane) / blue (person) block; masks, scribbles, and
    train_aug / train / val lists holding both."""
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    for n, (cls, colour) in enumerate([(1, (220, 30, 30)), (15, (30, 30, 220))]):
        image = np.full((64, 80, 3), 128, np.uint8) + rng.integers(0, 20, (64, 80, 3), dtype=np.uint8)
        mask = np.zeros((64, 80), np.uint8)
        image[16:48, 20 + 10 * n:60] = colour
        mask[16:48, 20 + 10 * n:60] = cls
        mask[15, 20:60] = 255
        Image.fromarray(image).save(root / "JPEGImages" / f"img{n}.jpg", quality=95)
        save_mask(root / "SegmentationClass" / f"img{n}.png", mask)
        scribble = np.full((64, 80), 255, np.uint8)
        scribble[30:33, 30:50] = cls
        scribble[2:5, 5:70] = 0
        Image.fromarray(scribble, mode="L").save((root / "pascal_2012_scribble").mkdir(exist_ok=True) or
                                                 root / "pascal_2012_scribble" / f"img{n}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("train_aug", "train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("img0\nimg1\n")
    return root


TINY = ["backbone.name=tiny", "backbone.pretrained=none", "train_cls.crop_size=64", "train_cls.epochs=1",
        "propagation.affinitynet.train.crop_size=96", "propagation.affinitynet.train.epochs=1", "propagation.irn.train.crop_size=96", "propagation.irn.train.epochs=1",
        "train_seg.crop_size=64", "train_seg.steps=2", "train_seg.val_every=2", "single.crop_size=64",
        "single.steps=2", "single.val_every=2", "workers=1", "cam.loader_workers=0", "cam.writers=0"]


@pytest.mark.parametrize("recipe", VOC_RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_two_images_with_the_tiny_backbone(recipe, tmp_path):
    root = _two_image_voc(tmp_path / "voc")
    overrides = TINY + [f"data.root={root}", f"paths.outputs={tmp_path / 'out'}"]
    params = load_params(REPO / "params.yaml", overrides, [str(recipe)])
    assert params.backbone.name == "tiny" and params.recipe.name == recipe.stem
    stages = pipeline_stages(params, single=is_single_stage(recipe))
    for stage in stages:  # a propagation stage is named <stage>@<propagation method>, as in dvc.yaml
        module, _, name = stage.partition("@")
        importlib.import_module(f"stages.{module}").run(params, *([name] if name else []))
    out = tmp_path / "out"
    evals = [s for s in stages if s.startswith("eval_")]
    for stage in evals:
        module, _, name = stage.partition("@")
        found = list((out / module / name).glob("*/details.json"))
        assert len(found) == 1, stage
        metrics = json.loads(found[0].read_text())
        assert 0.0 <= metrics["miou"] <= 1.0
        assert metrics["num_images"] == 2 and metrics["split"] in ("train", "val") and metrics["protocol"]
    if "eval_seg" in evals:
        seg = json.loads(next((out / "eval_seg").glob("*/details.json")).read_text())
        assert seg["protocol_description"].endswith("+ CRF") and seg["split"] == "val"  # the recipe's headline protocol
