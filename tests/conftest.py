import contextlib
import os
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


def make_project(tmp_path: Path, overrides: dict) -> Path:
    """A throwaway copy of the project (code, dvc.yaml, params.yaml with ``overrides``) with DVC initialised."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_dvc(project, "init", "--no-scm", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", project / ".dvc" / "plots")  # the custom plot templates
    return project


def run_dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(project)
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def coloured_squares(batch: int = 4, size: int = 64, seed: int = 0):
    """Grey images with 1-2 squares of pure red / green / blue; labels = colours present."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    images = torch.full((batch, 3, size, size), 0.5)
    labels = torch.zeros(batch, 3)
    for i in range(batch):
        for c in torch.randperm(3, generator=gen)[: 1 + i % 2].tolist():
            side = size // 3
            y, x = torch.randint(0, size - side, (2,), generator=gen).tolist()
            images[i, :, y : y + side, x : x + side] = 0.0
            images[i, c, y : y + side, x : x + side] = 1.0
            labels[i, c] = 1.0
    return images, labels


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# tests that take ``device`` run on the CPU and, where a GPU is present, on CUDA (`pytest -m cuda` runs
# only those: benchmarks/gpu_check.sh)
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not _cuda_available(), reason="no CUDA device: the CUDA run of this test needs a GPU")])]


@pytest.fixture(params=DEVICES)
def device(request):
    import torch

    return torch.device(request.param)


class Hang(BaseException):
    """Raised by :func:`deadline`'s alarm: a BaseException, so that no stage's error handling swallows it."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail the code inside with :class:`Hang` after ``seconds`` (SIGALRM): a hang becomes a failure."""
    def expire(signum, frame):
        raise Hang(f"still running after {seconds} s (a hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
