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
