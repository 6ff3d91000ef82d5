"""torchrun with gloo on CPU: two processes train the same weights as one with the same global batch, and a
sharded per-image stage writes the same bytes as an unsharded one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from pipeline.engine.sampling import EpochSampler

TINY = ["synthetic.num_train=10", "synthetic.num_val=2", "synthetic.image_size=48",
        "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
        "train_cls.batch_size=4", "train_cls.crop_size=48", "train_cls.epochs=1", "train_cls.lr=0.05",
        "train_cls.freeze_bn=true",  # torch has no CPU SyncBatchNorm: frozen BN makes the ranks exact
        "cam.scales=[1.0,0.5]", "crf.bg_threshold=0.3", "workers=1", "device=cpu", "seed=5"]


def _sets(tmp_path: Path, outputs: Path) -> list[str]:
    items = [f"paths.outputs={outputs}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
             *TINY]
    return [arg for item in items for arg in ("--set", item)]


def _stage(tmp_path: Path, outputs: Path, stage: str, processes: int, via_env: bool = False,
           extra: tuple[str, ...] = ()) -> str:
    """Run ``stage`` as one process or under torchrun: explicitly, or ``via_env`` through WSSS_TORCHRUN."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    env.pop("WSSS_TORCHRUN", None)
    launcher = [sys.executable]
    if processes > 1 and via_env:
        env["WSSS_TORCHRUN"] = f"--standalone --nproc_per_node {processes}"
    elif processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, "-m", "stages", stage, "-p", str(REPO / "params.yaml"), *_sets(tmp_path, outputs),
               *[arg for item in extra for arg in ("--set", item)]]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


@pytest.fixture
def dataset(tmp_path):
    from stages import data, synthetic
    from stages.config import load_params

    for outputs in ("one", "two"):
        params = load_params(REPO / "params.yaml", [s for s in _sets(tmp_path, tmp_path / outputs) if s != "--set"])
        if outputs == "one":
            synthetic.run(params)
        data.run(params)
    return tmp_path


def _without_seconds(path: Path) -> bytes:
    """A file's bytes; a stage record's without its wall time (the only thing that may differ)."""
    if path.name not in ("metrics.json", "details.json"):
        return path.read_bytes()
    return json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}).encode()


def test_rank_batches_together_make_the_single_process_batch():
    single = EpochSampler(10, 4, seed=1)
    ranks = [EpochSampler(10, 4, seed=1, world=2, rank=r) for r in range(2)]
    for epoch in range(3):
        single.set_epoch(epoch)
        order = [i for _, i in single]
        assert len(order) == 8 and len(set(order)) == 8  # 2 full global batches, the rest dropped
        shares = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            shares.append([i for _, i in sampler])
        for batch in range(2):
            together = shares[0][2 * batch: 2 * batch + 2] + shares[1][2 * batch: 2 * batch + 2]
            assert sorted(together) == sorted(order[4 * batch: 4 * batch + 4])
    single.set_epoch(0, skip_batches=1)
    assert [i for _, i in single] == order_of(0)[4:]
    with pytest.raises(Exception, match="batch_size=4 is the global batch"):
        EpochSampler(10, 4, seed=1, world=3)


def _initial_weights(num_fg: int) -> dict:
    from pipeline.cam.methods import build_method
    from pipeline.engine.runtime import seed_everything
    from pipeline.models.backbones import build_backbone

    seed_everything(5)
    return build_method("cam", build_backbone("tiny", 8, None), num_fg).state_dict()


def _classes(outputs: Path) -> list:
    return json.loads((outputs / "data" / "index.json").read_text())["classes"]


def order_of(epoch: int) -> list[int]:
    sampler = EpochSampler(10, 4, seed=1)
    sampler.set_epoch(epoch)
    return [i for _, i in sampler]


def test_torchrun_two_processes_train_the_single_process_weights_and_shard_cam_crf_exactly(dataset):
    tmp_path = dataset
    one, two = tmp_path / "one", tmp_path / "two"
    assert "training on" not in _stage(tmp_path, one, "train-cls", 1)
    assert "training on 2 processes (DistributedDataParallel, cpu)" in _stage(tmp_path, two, "train-cls", 2)
    expected = torch.load(one / "train_cls" / "cam" / "model.pt", weights_only=False)["state_dict"]
    got = torch.load(two / "train_cls" / "cam" / "model.pt", weights_only=False)["state_dict"]
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    trained = [n for n, v in _initial_weights(len(_classes(one)) - 1).items() if not torch.equal(v, expected[n])]
    assert any("classifier" in n or "head" in n for n in trained) and len(trained) > 5  # it did train
    metrics = [json.loads((out / "train_cls" / "cam" / "metrics.json").read_text()) for out in (one, two)]
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-5)  # mean over both ranks
    assert not (two / ".resume").exists()

    # the same model on both sides: the sharded CAMs must equal the single-process ones byte for byte
    (two / "train_cls" / "cam" / "model.pt").write_bytes((one / "train_cls" / "cam" / "model.pt").read_bytes())
    _stage(tmp_path, one, "cam", 1)
    log = _stage(tmp_path, two, "cam", 2, via_env=True)
    assert "rank 0 of 2: 5 of 10 images to do" in log and "rank 1 of 2: 5 of 10 images to do" in log
    reference = sorted((one / "cam" / "cam").glob("*.npz"))
    assert len(reference) == 10
    assert [p.name for p in reference] == sorted(p.name for p in (two / "cam" / "cam").glob("*.npz"))
    for path in reference:
        assert (two / "cam" / "cam" / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list((two / "cam").glob(".cam.*"))

    _stage(tmp_path, one, "crf", 1)
    _stage(tmp_path, two, "crf", 2)
    masks = sorted((one / "crf" / "cam").glob("*.png"))
    assert len(masks) == 10
    for path in masks:
        assert (two / "crf" / "cam" / path.name).read_bytes() == path.read_bytes(), path.name

    # evaluations: each rank evaluates its share, the confusions are summed, rank 0 writes the same files
    for stage, folder in (("eval-cam", "eval_cam"), ("eval-pseudo", "eval_pseudo"), ("inspect", "inspect")):
        _stage(tmp_path, one, stage, 1)
        _stage(tmp_path, two, stage, 2)
        files = sorted(p.relative_to(one / folder) for p in (one / folder / "cam").rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(two / folder) for p in (two / folder / "cam").rglob("*")
                                         if p.is_file())
        for name in files:  # (the report's notes name the outputs directory)
            got = _without_seconds(two / folder / name).replace(str(two).encode(), str(one).encode())
            assert got == _without_seconds(one / folder / name), name


def test_torchrun_two_processes_train_the_single_process_deeplab(dataset):
    # head v2 has neither batch norm nor dropout, and the backbone's norms are frozen: the ranks are exact
    seg = ("train_seg.labels=gt", "train_seg.steps=4", "train_seg.batch_size=4", "train_seg.crop_size=48",
           "train_seg.head=v2", "train_seg.freeze_backbone_bn=true", "train_seg.val_every=4")
    tmp_path = dataset
    one, two = tmp_path / "one", tmp_path / "two"
    _stage(tmp_path, one, "train-seg", 1, extra=seg)
    assert "training on 2 processes" in _stage(tmp_path, two, "train-seg", 2, via_env=True, extra=seg)
    expected = torch.load(one / "train_seg" / "cam_gt" / "model.pt", weights_only=False)["state_dict"]
    got = torch.load(two / "train_seg" / "cam_gt" / "model.pt", weights_only=False)["state_dict"]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    metrics = [json.loads((out / "train_seg" / "cam_gt" / "details.json").read_text()) for out in (one, two)]
    assert metrics[1]["val_miou_single_scale"] == pytest.approx(metrics[0]["val_miou_single_scale"], abs=1e-3)
    assert not (two / ".resume").exists()

    # the same model on both sides: the sharded evaluation writes the same files
    (two / "train_seg" / "cam_gt" / "model.pt").write_bytes((one / "train_seg" / "cam_gt" / "model.pt").read_bytes())
    _stage(tmp_path, one, "eval-seg", 1, extra=seg)
    _stage(tmp_path, two, "eval-seg", 2, extra=seg)
    files = sorted(p.relative_to(one) for p in (one / "eval_seg").rglob("*") if p.is_file())
    assert any(p.suffix == ".png" for p in files)
    assert files == sorted(p.relative_to(two) for p in (two / "eval_seg").rglob("*") if p.is_file())
    for name in files:
        assert _without_seconds(two / name) == _without_seconds(one / name), name


def test_stages_that_do_not_shard_refuse_to_run_under_torchrun(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["overlays", "-p", str(REPO / "params.yaml")])
    assert result.exit_code == 2
    assert "overlays does not run under torchrun" in result.output


@pytest.mark.parametrize("module, env, device, launched", [
    ("cam", {}, "auto", True),
    ("eval_seg", {}, "cuda", True),
    ("cam", {"WSSS_TORCHRUN": "off"}, "auto", False),     # one process asked for
    ("cam", {"WORLD_SIZE": "2"}, "auto", False),          # already a rank
    ("cam", {}, "cpu", False),                            # not on the GPUs
    ("cam", {}, "cuda:1", False),                         # one chosen GPU
    ("crf", {}, "auto", False),                           # a CPU stage: its pool uses the cores
])
def test_gpu_per_image_stages_use_every_visible_gpu_by_default(monkeypatch, module, env, device, launched):
    from stages import cli

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("WSSS_TORCHRUN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setattr(cli.sys, "argv", ["wsss-pipe", module.replace("_", "-"), "-p", "params.yaml"])
    cli._all_local_gpus(module, device)
    if launched:
        assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                          "-m", "stages", module.replace("_", "-"), "-p", "params.yaml"]]
    else:
        assert calls == []
