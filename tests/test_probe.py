"""The probe of issue 20 as a table, through the CLI: bad outputs locations, ids that are paths, images and
masks of unsupported modes, non-finite and boolean numbers, sections given twice, bad pretrained paths,
checkpoints whose keys are right but whose weights are not. Each is a one-line error naming the culprit,
exit 2, nothing published and nothing deleted that the pipeline did not write. Then the cases that are not
errors or need a process of their own: a damaged resume file (start over), a 16-bit image (scaled, not
white), a zero-byte CAM under a process pool (no hang), SIGKILL of ``cam`` (no orphaned loader workers).
Every test runs under a timeout (:func:`_deadline`)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import deadline
import torch
from PIL import Image

from conftest import REPO
from pipeline.data.image_files import load_image
from pipeline.engine.atomic import OWNER_MARKER
from stages.cli import app
from test_bad_input import TINY, _split, project, runner  # noqa: F401  (project: the shared fixture)

pytestmark = pytest.mark.slow
TIMEOUT_S = 150


@pytest.fixture(autouse=True)
def _deadline():
    with deadline(TIMEOUT_S):
        yield


def _cli(stage: str, root: Path, out: Path, *sets: str, params: Path = REPO / "params.yaml"):
    items = [f"paths.outputs={out}", f"data.root={root}", f"synthetic.root={root}", *TINY, *sets]
    return runner.invoke(app, [*stage.split(), "-p", str(params), *[a for i in items for a in ("--set", i)]])


def _image(root: Path, image_id: str, array: np.ndarray, fmt: str) -> None:
    Image.fromarray(array).save(root / "JPEGImages" / f"{image_id}.jpg", format=fmt)


def _foreign_data_dir(out: Path) -> None:
    (out / "data").mkdir()
    (out / "data" / "README.md").write_text("somebody's notes\n")


def _params_with_duplicate_section(tmp: Path) -> Path:
    path = tmp / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + "\ncam:\n  flip: false\n")
    return path


def _state_dict_of_another_shape(out: Path) -> None:
    path = out / "train_cls" / "cam" / "model.pt"
    checkpoint = torch.load(path, weights_only=False)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.ndim == 4)
    checkpoint["state_dict"][name] = torch.zeros(3, 3, 1, 1)
    torch.save(checkpoint, path)


def _unknown_method(out: Path) -> None:
    path = out / "train_cls" / "cam" / "model.pt"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["method"] = "nope"
    torch.save(checkpoint, path)


def _seg_checkpoint_with_foreign_weights(out: Path) -> None:
    path = out / "train_seg" / "cam_pseudo" / "model.pt"
    path.parent.mkdir(parents=True)
    class_names = [f"c{i}" for i in range(6)]
    torch.save({"head": "v3", "class_names": class_names, "train_split": "train",
                "backbone": {"name": "tiny", "output_stride": 8}, "state_dict": {"w": torch.zeros(2)}}, path)


def _garbage_affinity_model(out: Path) -> None:
    path = out / "train_prop" / "affinitynet" / "cam" / "model.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")


def _nothing_in(path: Path):
    return lambda: not path.exists() or not [p for p in path.iterdir() if not p.name.startswith(".")]


# (name, stage, output that must not be published, culprit in the message,
#  damage(root, out, tmp) -> extra --set items (a Path: the params file to use), extra check(root, out, tmp))
CASES = [
    ("outputs is the working directory", "data", "data", "paths.outputs",
     lambda r, o, t: ["paths.outputs=."], lambda r, o, t: (t / "data" / "README.md").is_file()),
    ("outputs is empty", "data", "data", "paths.outputs", lambda r, o, t: ["paths.outputs="], None),
    ("outputs is a file", "data", "data", "a_file",
     lambda r, o, t: (t / "a_file").write_text("x") and [f"paths.outputs={t / 'a_file'}"],
     lambda r, o, t: (t / "a_file").read_text() == "x"),
    ("stage folder holds foreign files", "data", "data", "README.md",
     lambda r, o, t: _foreign_data_dir(o) or [],
     lambda r, o, t: sorted(p.name for p in (o / "data").iterdir()) == ["README.md"]),
    ("id is a path", "data", "data", "train.txt:2",
     lambda r, o, t: _split(r, ["train_00000", "../../../../x"]) or [], None),
    ("id with a space", "data", "data", "train.txt:1", lambda r, o, t: _split(r, ["train 00001"]) or [], None),
    ("id with a control character", "data", "data", "train.txt:1",
     lambda r, o, t: _split(r, ["train\x0700001"]) or [], None),
    ("float image", "data", "data", "train_00001.jpg",
     lambda r, o, t: _image(r, "train_00001", np.zeros((48, 48), np.float32), "TIFF") or [], None),
    ("16-bit mask", "data", "data", "train_00000.png",
     lambda r, o, t: Image.fromarray(np.ones((48, 48), np.uint16)).save(
         r / "SegmentationClass" / "train_00000.png") or [], None),
    ("infinite learning rate", "train-cls", "train_cls", "train_cls.lr", lambda r, o, t: ["train_cls.lr=.inf"], None),
    ("NaN threshold", "crf", "crf", "crf.bg_threshold", lambda r, o, t: ["crf.bg_threshold=.nan"], None),
    ("boolean epochs", "train-cls", "train_cls", "train_cls.epochs", lambda r, o, t: ["train_cls.epochs=true"], None),
    ("boolean scale", "cam", "cam", "cam.scales", lambda r, o, t: ["cam.scales=[true]"], None),
    ("section given twice", "train-cls", "train_cls", "'cam' is given twice",
     lambda r, o, t: _params_with_duplicate_section(t), None),
    ("empty pretrained", "train-cls", "train_cls", "backbone.pretrained", lambda r, o, t: ["backbone.pretrained="],
     None),
    ("pretrained is a directory", "train-cls", "train_cls", "is a directory",
     lambda r, o, t: ["backbone.name=resnet50", f"backbone.pretrained={t}"], None),
    ("classifier weights of another shape", "cam", "cam", "model.pt",
     lambda r, o, t: _state_dict_of_another_shape(o) or [], None),
    ("checkpoint of an unknown method", "cam", "cam", "model.pt: checkpoint of unknown method",
     lambda r, o, t: _unknown_method(o) or [], None),
    ("segmentation weights of another model", "eval-seg", "eval_seg", "model.pt: checkpoint weights do not fit",
     lambda r, o, t: _seg_checkpoint_with_foreign_weights(o) or [], None),
    ("failed walk leaves no work directory", "walk affinitynet", "walk/affinitynet", "model.pt",
     lambda r, o, t: _garbage_affinity_model(o) or ["propagation.affinitynet.walk.bg_threshold=0.3", "propagation.affinitynet.walk.bg_alpha=8"],
     lambda r, o, t: not (o / "walk" / "affinitynet").exists() or not list((o / "walk" / "affinitynet").glob(".*"))),
]


@pytest.mark.parametrize("name, stage, output, culprit, damage, check", CASES, ids=[case[0] for case in CASES])
def test_probe_is_a_one_line_error_naming_the_culprit(project, tmp_path, monkeypatch, name, stage, output, culprit,
                                                      damage, check):
    import shutil

    root, out = tmp_path / "syn", tmp_path / "out"
    shutil.copytree(project[0], root)
    shutil.copytree(project[1], out)
    shutil.rmtree(out / output, ignore_errors=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("tracked\n")
    monkeypatch.chdir(tmp_path)
    if stage != "data":  # the copied index names the original dataset: index the copy
        assert _cli("data", root, out).exit_code == 0
    damaged = damage(root, out, tmp_path)
    sets, params = (damaged, REPO / "params.yaml") if isinstance(damaged, list) else ([], damaged)
    result = _cli(stage, root, out, *sets, params=params)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert culprit in lines[0], lines[0]
    if check is None:
        assert _nothing_in(out / output)(), sorted(p.name for p in (out / output).rglob("*"))
    else:
        assert check(root, out, tmp_path), name
    assert (tmp_path / "data" / "README.md").read_text() == "tracked\n"
    assert not (out / ".locks").exists() or not list((out / ".locks").iterdir())  # the lock went with the run


def test_damaged_resume_weights_mean_starting_over(project, tmp_path, monkeypatch):
    import shutil

    import stages.train_cls

    out = tmp_path / "out"
    shutil.copytree(project[1], out)
    monkeypatch.setattr(stages.train_cls, "clear_resume", lambda *args, **kwargs: None)  # keep the resume file
    assert _cli("train-cls", project[0], out, "train_cls.resume_every=1").exit_code == 0
    (resume,) = (out / ".resume" / "train_cls" / "cam").glob("*.pt")
    state = torch.load(resume, weights_only=False)
    name = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][name] = torch.zeros(1, 1, 1, 1)  # the right key, weights that do not fit
    torch.save(state, resume)
    monkeypatch.undo()
    result = _cli("train-cls", project[0], out, "train_cls.resume_every=1")
    assert result.exit_code == 0, result.output
    assert "resume state does not fit this run" in result.output and "starting over" in result.output
    assert (out / "train_cls" / "cam" / "model.pt").is_file()
    assert not resume.exists()  # published: the resume file is gone


def test_16_bit_image_is_scaled_not_white(project, tmp_path):
    import shutil

    root, out = tmp_path / "syn", tmp_path / "out"
    shutil.copytree(project[0], root)
    values = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    _image(root, "train_00001", values, "PNG")
    image = load_image(root / "JPEGImages" / "train_00001.jpg")
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255 and 100 < image.mean() < 155  # a ramp, not solid white
    np.testing.assert_array_equal(image[..., 0], np.rint(values / 257.0).astype(np.uint8))
    assert _cli("data", root, out).exit_code == 0


def _subprocess_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "stages", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _sets(root: Path, out: Path, *extra: str) -> list[str]:
    items = [f"paths.outputs={out}", f"data.root={root}", *TINY, *extra]
    return [a for i in items for a in ("--set", i)]


@pytest.mark.parametrize("attempt", range(4))
def test_zero_byte_cam_under_a_pool_fails_and_exits(project, tmp_path, attempt):
    """The pool is stopped cooperatively on a worker's error: the stage exits (it hung in 3 runs of 11 when
    the pool's workers were terminated mid-write)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(project[1], out)
    (out / "cam" / "cam" / "train_00002.npz").write_bytes(b"")
    proc = _subprocess_cli(["eval-cam", "-p", str(REPO / "params.yaml"),
                            *_sets(project[0], out, "workers=2", "eval_cam.threshold_step=0.001")])
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("eval-cam hung after its error")
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "train_00002.npz" in lines[0], stderr
    assert not (out / "eval_cam").exists() or not list((out / "eval_cam").rglob("*.json"))


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_cam_takes_its_loader_workers_along(project, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(project[1], out)
    shutil.rmtree(out / "cam")
    # many scales: the forward is slow enough for the workers to be caught alive
    proc = _subprocess_cli(["cam", "-p", str(REPO / "params.yaml"),
                            *_sets(project[0], out, "cam.loader_workers=2",
                                   "cam.scales=[" + ",".join(str(1 + i / 4) for i in range(20)) + "]")])
    try:
        deadline, workers = time.time() + 60, set()
        while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = {c for c in _children(proc.pid) if _alive(c)}
            time.sleep(0.05)
        if len(workers) < 2:
            pytest.skip("cam finished before its loader workers could be seen")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        deadline = time.time() + 2.0
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "loader workers outlived the killed stage"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not (out / "cam" / "cam").exists()  # nothing published by the killed run


def test_published_directories_carry_the_marker(project):
    for stage in ("data", "cam/cam", "train_cls/cam"):
        assert (project[1] / stage / OWNER_MARKER).is_file(), stage
