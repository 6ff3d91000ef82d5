import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _params(tmp_path, extra=""):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + extra)
    return path


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synthetic", "data", "train-cls", "cam", "eval-cam"):
        assert command in result.output


def test_missing_data_root_is_one_line_error_and_writes_nothing(tmp_path):
    params = _params(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stages", "data", "-p", str(params), "--set", f"paths.outputs={out}",
         "--set", f"data.root={tmp_path / 'no_such_voc'}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no_such_voc" in result.stderr
    assert not out.exists()


def test_bad_parameter_fails_before_anything_runs(tmp_path):
    params = _params(tmp_path)
    result = runner.invoke(app, ["train-cls", "-p", str(params), "--set", "train_cls.lr=-1"])
    assert result.exit_code == 2
    assert "train_cls.lr" in result.output


def test_missing_checkpoint_names_the_file(tmp_path):
    params = _params(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["cam", "-p", str(params), "--method", "cam", "--set", f"paths.outputs={out}"])
    assert result.exit_code == 2
    assert "index.json" in result.output or "model.pt" in result.output
    assert not (out / "cam").exists()


@pytest.mark.parametrize("method", ["nope"])
def test_unknown_method_option(tmp_path, method):
    params = _params(tmp_path)
    result = runner.invoke(app, ["cam", "-p", str(params), "--method", method])
    assert result.exit_code == 2 and "method" in result.output


_SLEEPING_STAGE = r"""
import os, sys, time, types
from pathlib import Path
from pipeline.engine.atomic import atomic_dir
from stages.common import parallel_map

def _sleep(i):
    Path(sys.argv[2], f"{os.getpid()}.pid").write_text("")
    time.sleep(60)

def run(params):
    with atomic_dir(sys.argv[1]) as tmp:
        (tmp / "partial.npz").write_text("x")
        for _ in parallel_map(_sleep, list(range(8)), 2, "sleep", chunksize=1):
            pass

module = types.ModuleType("stages.sleeping")
module.run = run
module._sleep = _sleep
sys.modules["stages.sleeping"] = module
_sleep.__module__ = "stages.sleeping"
import typer
from stages.cli import _run
try:
    _run("sleeping", sys.argv[3], [])
except typer.Exit as stop:
    sys.exit(stop.exit_code)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_cleans_temporaries_and_stops_pool_workers(tmp_path):
    import signal
    import time

    out, pids = tmp_path / "outputs" / "stage", tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPING_STAGE, str(out), str(pids), str(_params(tmp_path))],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list(pids.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(list(pids.iterdir())) == 2, "pool workers did not start"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == "terminated: no output was written"
    assert not (tmp_path / "outputs").exists()  # no temporary, no empty parent directory
    time.sleep(0.5)
    assert not any(_alive(int(p.stem)) for p in pids.iterdir())
