"""Kill tests: a training stage SIGKILLed after its first resume checkpoint, and a per-image stage
SIGKILLed mid-way, finish on the next run, resume (not start over) and equal an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO

TINY = ["synthetic.num_train=12", "synthetic.num_val=2", "synthetic.image_size=48",
        "backbone.name=tiny", "backbone.pretrained=none", "backbone.output_stride=8",
        "train_cls.batch_size=4", "train_cls.crop_size=48", "train_cls.epochs=10", "train_cls.lr=0.01",
        "cam.scales=[1.0,0.5]", "workers=1", "seed=3"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO)
    return env


def _command(stage: str, tmp_path: Path, outputs: Path, *overrides: str) -> list[str]:
    sets = [f"paths.outputs={outputs}", f"synthetic.root={tmp_path / 'syn'}", f"data.root={tmp_path / 'syn'}",
            *TINY, *overrides]
    return [sys.executable, "-m", "stages", stage, "-p", str(REPO / "params.yaml"),
            *[arg for item in sets for arg in ("--set", item)]]


def _run(stage: str, tmp_path: Path, outputs: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(stage, tmp_path, outputs, *overrides), cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def _kill_when(stage: str, tmp_path: Path, outputs: Path, ready, *overrides: str) -> None:
    """Start ``stage``, SIGKILL it as soon as ``ready()`` holds (polled), and check it died mid-run."""
    proc = subprocess.Popen(_command(stage, tmp_path, outputs, *overrides), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{stage} ended before it could be killed:\n{proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{stage}: nothing to kill at after 240 s")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _published(directory: Path, pattern: str):
    """Files of ``directory`` matching ``pattern`` that were renamed into place (not atomic temporaries)."""
    return [p for p in directory.glob(pattern) if not p.name.startswith(".")]


def _params(tmp_path: Path, outputs: Path, *overrides: str):
    from stages.config import load_params

    return load_params(REPO / "params.yaml", [f"paths.outputs={outputs}", f"synthetic.root={tmp_path / 'syn'}",
                                              f"data.root={tmp_path / 'syn'}", *TINY, *overrides])


@pytest.fixture
def dataset(tmp_path):
    from stages import data, synthetic

    synthetic.run(_params(tmp_path, tmp_path / "out_a"))
    for outputs in ("out_a", "out_b"):
        data.run(_params(tmp_path, tmp_path / outputs))
    return tmp_path


def test_killed_training_resumes_and_ends_with_the_uninterrupted_weights(dataset):
    tmp_path = dataset
    clean, killed = tmp_path / "out_a", tmp_path / "out_b"
    _run("train-cls", tmp_path, clean, "train_cls.resume_every=0")
    resume_dir = killed / ".resume" / "train_cls" / "cam"
    _kill_when("train-cls", tmp_path, killed, lambda: _published(resume_dir, "*.pt"), "train_cls.resume_every=2")
    assert not (killed / "train_cls").exists()  # killed before publishing anything

    second = _run("train-cls", tmp_path, killed, "train_cls.resume_every=2")
    resumed_step = int(second.stderr.split("resuming from ")[1].split(": step ")[1].split()[0])
    assert 2 <= resumed_step < 30  # 30 = 10 epochs x 3 batches: it continued, it did not start over
    assert not (killed / ".resume").exists()  # deleted once the stage completed

    expected = torch.load(clean / "train_cls" / "cam" / "model.pt", weights_only=False)["state_dict"]
    got = torch.load(killed / "train_cls" / "cam" / "model.pt", weights_only=False)["state_dict"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    history = lambda out: (out / "train_cls" / "cam" / "history.csv").read_text()  # noqa: E731
    assert history(clean) == history(killed)


def test_resume_state_of_other_params_is_never_used(dataset):
    tmp_path = dataset
    killed = tmp_path / "out_b"
    resume_dir = killed / ".resume" / "train_cls" / "cam"
    _kill_when("train-cls", tmp_path, killed, lambda: _published(resume_dir, "*.pt"), "train_cls.resume_every=2")
    stale = _published(resume_dir, "*.pt")[0]
    second = _run("train-cls", tmp_path, killed, "train_cls.resume_every=2", "train_cls.lr=0.02")
    assert "resuming" not in second.stderr
    assert not stale.exists() and not (killed / ".resume").exists()


def test_killed_cam_keeps_finished_images_and_does_only_the_rest(dataset):
    from stages import train_cls

    tmp_path = dataset
    out = tmp_path / "out_a"
    train_cls.run(_params(tmp_path, out, "train_cls.epochs=1"))
    scales = "cam.scales=[1.0,0.5,1.5,2.0]"
    _run("cam", tmp_path, out, scales)
    reference = out / "cam" / "cam"
    reference.rename(tmp_path / "reference")
    reference = tmp_path / "reference"

    parent = out / "cam"
    partial = lambda: [f for d in parent.glob(".cam.*.partial") for f in _published(d, "*.npz")]  # noqa: E731
    _kill_when("cam", tmp_path, out, lambda: len(partial()) >= 2, scales)
    assert not (parent / "cam").exists()  # nothing published
    kept = {f.name: f.stat().st_ino for f in partial()}
    assert 2 <= len(kept) < 12

    _run("cam", tmp_path, out, scales)
    published = parent / "cam"
    assert sorted(p.name for p in published.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert not list(parent.glob(".cam.*"))  # the work directory became the output
    for name, inode in kept.items():
        assert (published / name).stat().st_ino == inode  # kept, not computed again
    for path in reference.iterdir():
        assert (published / path.name).read_bytes() == path.read_bytes(), path.name

    # other params: the kept work of a killed run is discarded, not mixed in
    _kill_when("cam", tmp_path, out, lambda: len(partial()) >= 1, "cam.scales=[1.0]")
    stale = partial()
    _run("cam", tmp_path, out, scales)
    assert not any(f.exists() for f in stale)
    for path in reference.iterdir():
        assert (published / path.name).read_bytes() == path.read_bytes(), path.name


SEG = ["train_seg.labels=gt", "train_seg.steps=12", "train_seg.batch_size=4", "train_seg.crop_size=48",
       "train_seg.val_every=5", "train_seg.head=v2"]
SINGLE = ["single.supervision=full", "single.loss=dfr", "single.steps=12", "single.batch_size=4",
          "single.crop_size=48", "single.val_every=5", "single.deep_warmup_steps=2", "single.head=v2"]


@pytest.mark.parametrize("stage, tag, overrides", [
    ("train-seg", "cam_gt", SEG),
    ("train-single", "full_dfr", SINGLE),
])
def test_killed_step_training_resumes_with_the_uninterrupted_weights_and_curves(dataset, stage, tag, overrides):
    tmp_path = dataset
    clean, killed = tmp_path / "out_a", tmp_path / "out_b"
    section = stage.replace("-", "_")
    every = "single" if stage == "train-single" else section
    _run(stage, tmp_path, clean, *overrides, f"{every}.resume_every=0")
    resume_dir = killed / ".resume" / section / tag
    _kill_when(stage, tmp_path, killed, lambda: _published(resume_dir, "*.pt"), *overrides, f"{every}.resume_every=3")
    assert not (killed / section / tag).exists()  # only its atomic temporary, removed by the next run

    second = _run(stage, tmp_path, killed, *overrides, f"{every}.resume_every=3")
    resumed_step = int(second.stderr.split("resuming from ")[1].split(": step ")[1].split()[0])
    assert 3 <= resumed_step < 12 and resumed_step % 3 == 0
    assert not (killed / ".resume").exists()
    assert [p.name for p in (killed / section).iterdir()] == [tag]  # the killed run's temporary is gone

    expected = torch.load(clean / section / tag / "model.pt", weights_only=False)["state_dict"]
    got = torch.load(killed / section / tag / "model.pt", weights_only=False)["state_dict"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # the curves of the resumed run are whole: the steps before the kill were replayed into dvclive
    curves = clean / section / tag / "dvclive" / "plots" / "metrics"
    for curve in ("loss.tsv", "val_miou.tsv"):
        reference = (curves / curve).read_text().splitlines()
        resumed = (killed / section / tag / "dvclive" / "plots" / "metrics" / curve).read_text().splitlines()
        assert len(resumed) == len(reference) > 2
        assert [line.split("\t")[1:] for line in resumed] == [line.split("\t")[1:] for line in reference]
