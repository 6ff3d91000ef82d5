"""Resume keyed on the code: a changed source file discards a killed run's partial work and resume
checkpoint (with a one-line notice); unchanged source resumes them."""
from pathlib import Path

import pytest
import torch

from conftest import REPO
from pipeline.engine import code_version
from pipeline.engine.atomic import atomic_dir, partial_dir
from pipeline.engine.trainer import Hook, train
from stages.common import clear_resume, resume_path, run_key


def _tree(root: Path) -> Path:
    for rel, text in {"pipeline/a.py": "A = 1\n", "pipeline/sub/b.py": "B = 2\n", "stages/c.py": "C = 3\n",
                      "pipeline/notes.txt": "not code\n", "tests/t.py": "T = 4\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_source_digest_follows_every_py_file_of_the_packages_only(tmp_path):
    root = _tree(tmp_path)
    first = code_version.source_digest(root)
    assert code_version.source_digest(root) == first  # unchanged source: same digest
    (root / "pipeline/notes.txt").write_text("edited\n")
    (root / "tests/t.py").write_text("T = 5\n")
    assert code_version.source_digest(root) == first  # not package code
    (root / "pipeline/sub/b.py").write_text("B = 3\n")
    changed = code_version.source_digest(root)
    assert changed != first
    (root / "pipeline/sub/b.py").rename(root / "pipeline/sub/b2.py")
    assert code_version.source_digest(root) not in (first, changed)  # a renamed module counts too


def test_code_digest_is_this_checkouts_source_and_cached():
    assert code_version.code_digest() == code_version.source_digest(REPO)
    assert code_version.code_digest.cache_info().currsize == 1


@pytest.fixture
def params(tmp_path):
    from stages.config import load_params

    return load_params(REPO / "params.yaml", [f"paths.outputs={tmp_path / 'out'}"])


def _code(monkeypatch, digest: str) -> None:
    monkeypatch.setattr(code_version, "code_digest", lambda: digest)


def test_changed_code_discards_partial_work_and_unchanged_code_keeps_it(params, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out" / "cam" / "cam"
    _code(monkeypatch, "old")
    old_key = run_key(params, ["seed", "cam"])
    with pytest.raises(KeyboardInterrupt), atomic_dir(output, key=old_key) as work:  # a killed run
        (work / "a.npz").write_bytes(b"old code's output")
        raise KeyboardInterrupt
    assert run_key(params, ["seed", "cam"]) == old_key  # same code, params and inputs: same key
    with atomic_dir(output, key=run_key(params, ["seed", "cam"])) as work:
        assert (work / "a.npz").read_bytes() == b"old code's output"  # resumed
        used = work
    assert not used.exists() and (output / "a.npz").is_file()

    with pytest.raises(KeyboardInterrupt), atomic_dir(output, key=old_key) as work:
        (work / "a.npz").write_bytes(b"old code's output")
        raise KeyboardInterrupt
    capsys.readouterr()
    _code(monkeypatch, "fixed")
    new_key = run_key(params, ["seed", "cam"])
    assert new_key != old_key
    with atomic_dir(output, key=new_key) as work:
        assert not (work / "a.npz").exists()  # the old code's work is not mixed in
        (work / "a.npz").write_bytes(b"new")
    notice = capsys.readouterr().err.strip().splitlines()
    assert notice == [f"{partial_dir(output, old_key)}: discarded, the work of a killed run with other params, "
                      "inputs or code"]
    assert not partial_dir(output, old_key).exists()


class _Kill(Hook):
    def __init__(self, at: int):
        self.at = at

    def after_step(self, step, values):
        if step == self.at:
            raise KeyboardInterrupt


def _train(path: Path, key: str, hooks=()):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.param_groups = lambda lr, mult: [{"params": list(model.parameters()), "lr": lr}]
    data = [(torch.randn(4, 3), torch.randn(4, 2)) for _ in range(2)]
    step_fn = lambda net, x, y, step: {"loss": ((net(x) - y) ** 2).mean()}  # noqa: E731
    records = train(model, step_fn, data, 6, 0.1, name="test", lr_param="test.lr", amp=False, hooks=hooks,
                    resume_path=path, resume_every=2, resume_key=key)
    return model, records


def test_changed_code_discards_the_resume_checkpoint_and_unchanged_code_resumes(params, monkeypatch, capsys):
    _code(monkeypatch, "old")
    key = run_key(params, ["seed", "train_seg"])
    old = resume_path(params, "train_seg", "cam_gt", key)
    with pytest.raises(KeyboardInterrupt):
        _train(old, key, [_Kill(at=2)])  # killed after its checkpoint at step 2
    assert old.is_file()

    same = resume_path(params, "train_seg", "cam_gt", run_key(params, ["seed", "train_seg"]))
    clear_resume(same, keep=True)
    capsys.readouterr()
    _, records = _train(same, run_key(params, ["seed", "train_seg"]))
    assert "resuming from" in capsys.readouterr().err and len(records) == 6
    clear_resume(same)  # as the stage does once its outputs are published

    with pytest.raises(KeyboardInterrupt):
        _train(old, key, [_Kill(at=2)])
    capsys.readouterr()
    _code(monkeypatch, "fixed")
    new_key = run_key(params, ["seed", "train_seg"])
    new = resume_path(params, "train_seg", "cam_gt", new_key)
    clear_resume(new, keep=True)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{old}: discarded, written by a run with other params, inputs or code"]
    assert not old.exists()
    _train(new, new_key)
    assert "resuming" not in capsys.readouterr().err
