"""The single-stage branch: model outputs, CAM seeds, a short training that lowers every loss term, the
stages end to end on a tiny generated dataset, and bad parameters."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.engine.atomic import OWNER_MARKER
from pipeline.errors import ConfigError, WsssError
from pipeline.models.backbones import build_backbone
from pipeline.segmentation.scribbles import generate_scribble, image_rng
from pipeline.segmentation.single_stage import SingleStageLoss, SingleStageModel, cam_seeds, train_single_stage
from stages import data, eval_single, scribbles, synthetic, train_single
from stages.config import load_params
from conftest import REPO


def model(num_classes=3, loss="dfr", with_cam=False):
    torch.manual_seed(0)
    return SingleStageModel(build_backbone("tiny", 8), num_classes, embed_dim=8 if loss == "dfr" else None,
                            with_cam=with_cam)


def test_model_outputs():
    net = model(with_cam=True)
    images = torch.rand(2, 3, 40, 48)
    assert net(images).shape == (2, 3, 40, 48)
    out = net.forward_train(images)
    assert out["logits"].shape == (2, 3, 40, 48)
    assert out["embeddings"].shape == (2, 8, 5, 6) and out["cams"].shape == (2, 2, 5, 6)
    torch.testing.assert_close(net.eval()(images), net.forward_train(images)["logits"])


def test_cam_seeds_follow_the_thresholds():
    cams = torch.zeros(1, 2, 2, 2)
    cams[0, 0] = torch.tensor([[1.0, 0.5], [0.1, 0.0]])
    cams[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 4.0]])      # class 2 absent from the labels
    seeds = cam_seeds(cams, torch.tensor([[1.0, 0.0]]), (2, 2), fg=0.7, bg=0.25)
    assert seeds.tolist() == [[[1, 255], [0, 0]]]


def squares_dataset(n=8, size=32):
    """Two-colour images (a coloured square on grey) with generated scribbles, GT classes 0 / 1 / 2."""
    rng = np.random.default_rng(0)
    images, labels, masks = [], [], []
    for i in range(n):
        image = np.full((size, size, 3), 0.5, np.float32)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        cls = 1 + i % 2
        image[y : y + size // 2, x : x + size // 2] = (1.0, 0.1, 0.1) if cls == 1 else (0.1, 0.1, 1.0)
        mask[y : y + size // 2, x : x + size // 2] = cls
        images.append(image.transpose(2, 0, 1))
        labels.append(generate_scribble(mask, 1, 0.1, image_rng(0, str(i))))
        masks.append(mask)
    image_labels = torch.tensor([[1.0, 0.0] if i % 2 == 0 else [0.0, 1.0] for i in range(n)])
    return (torch.tensor(np.stack(images)), torch.tensor(np.stack(labels)).long(),
            torch.ones(n, size, size), image_labels)


@pytest.mark.parametrize("supervision, loss, terms", [
    ("scribble", "pce", ["pce"]),
    ("scribble", "crf", ["pce", "crf"]),
    ("scribble", "dfr", ["pce", "crf", "fc"]),
    ("image", "crf", ["cls", "crf"]),
])
def test_short_training_lowers_every_loss_term(supervision, loss, terms):
    tensors = squares_dataset()
    loader = DataLoader(TensorDataset(*tensors), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    net = model(loss=loss, with_cam=supervision == "image")
    objective = SingleStageLoss(supervision=supervision, loss=loss, crf_weight=1.0, crf_scale=0.5,
                                sigma_xy=10.0, deep_warmup_steps=0)
    history = train_single_stage(net, objective, loader, max_steps=30, lr=0.05, head_lr_mult=1.0, amp=False)
    for term in terms:
        first = np.mean([h[term] for h in history[:4]])
        last = np.mean([h[term] for h in history[-4:]])
        assert last < first, (term, first, last)
    assert all(h["seconds"] > 0 for h in history)


@pytest.fixture
def tiny(tmp_path):
    def make(*overrides):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / 'out'}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            "synthetic.num_train=4", "synthetic.num_val=2", "synthetic.image_size=48", "workers=1",
            "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
            "single.steps=2", "single.batch_size=2", "single.crop_size=48", "single.val_every=2",
            "eval_single.scales=[1.0]", *overrides])
    return make


@pytest.mark.parametrize("supervision, loss", [("scribble", "dfr"), ("image", "crf")])
def test_stages_train_and_evaluate_with_eval_segs_code(tiny, supervision, loss):
    params = tiny(f"single.supervision={supervision}", f"single.loss={loss}")
    synthetic.run(params)
    data.run(params)
    if supervision == "scribble":
        scribbles.run(params)
    train_metrics = train_single.run(params)
    assert train_metrics["seconds_per_step"] > 0 and "pce" in train_metrics["final_terms"]
    metrics = eval_single.run(params)
    out = Path(params.paths.outputs) / "eval_single" / f"{supervision}_{loss}"
    assert json.loads((out / "details.json").read_text())["loss"] == loss
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["num_images"] == 2
    assert {p.name for p in out.iterdir()} - {OWNER_MARKER} == {"metrics.json", "details.json", "per_class.csv",
                                                              "confusion.json", "confusion.csv", "pred"}
    if supervision == "scribble":  # overlays show the single-stage prediction as one more panel
        from PIL import Image

        from stages import overlays

        (Path(params.paths.outputs) / "cam" / params.method).mkdir(parents=True)
        overlays.run(params)
        shown = sorted((Path(params.paths.outputs) / "overlays" / params.method).glob("*.png"))[0]
        with_single = Image.open(shown).size[0]
        (Path(params.paths.outputs) / "train_single" / f"{supervision}_{loss}" / "model.pt").unlink()
        overlays.run(params)
        assert Image.open(shown).size[0] < with_single


def test_scribble_supervision_needs_the_scribbles_stage(tiny):
    params = tiny()
    synthetic.run(params)
    data.run(params)
    with pytest.raises(WsssError, match="scribbles"):
        train_single.run(params)
    assert not (Path(params.paths.outputs) / "train_single").exists()


@pytest.mark.parametrize("override, message", [
    ("single.loss=ncut", "single.loss"),
    ("single.supervision=points", "single.supervision"),
    ("single.seed_bg=0.8", "seed_bg must be below seed_fg"),
    ("single.crf_scale=1.5", "single.crf_scale"),
    ("scribbles.coverage=0", "scribbles.coverage"),
    ("scribbles.source=web", "scribbles.source"),
])
def test_bad_params_are_one_line_errors(tiny, override, message):
    with pytest.raises(ConfigError) as info:
        tiny(override)
    assert message in str(info.value) and "\n" not in str(info.value)
