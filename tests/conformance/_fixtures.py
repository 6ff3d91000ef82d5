"""The authors' golden fixtures (``../shared/conformance``; its README.md says what each array holds):
loading, and checking arrays at the tolerance manifest.json states. A test that loads a fixture skips,
with a one-line reason, where the folder is absent (a user's clone)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance"


def load(name: str) -> dict[str, np.ndarray]:
    """Every array of ``<name>.npz``; skips the test where the fixture folder is absent."""
    path = CONFORMANCE / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"no authors' fixture {path} (../shared/conformance is not beside this clone)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def tensor(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A float64 copy (the SEAM / CPN fixtures are float64 computations), optionally a leaf with grad."""
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


@lru_cache(maxsize=None)
def _manifest() -> dict:
    path = CONFORMANCE / "manifest.json"
    if not path.is_file():
        pytest.skip(f"no conformance manifest {path} (../shared/conformance is not beside this clone)")
    return json.loads(path.read_text())


def tolerance(name: str, array: str):
    """The manifest's rule for ``array`` of ``name``: "exact", {"abs": x} or {"rel": x}; an array it does
    not list (the pair index arrays of irn_affinity_loss) is compared exactly."""
    rules = _manifest()["files"][f"{name}.npz"]["tolerance"]
    return rules.get(array, rules.get("*", "exact"))


def assert_close(name: str, array: str, actual, expected) -> None:
    actual = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}:{array}: shape {actual.shape}, expected {expected.shape}"
    rule = tolerance(name, array)
    nan = np.isnan(expected)
    assert np.array_equal(nan, np.isnan(actual)), f"{name}:{array}: NaNs at different places"
    actual, expected = actual[~nan], expected[~nan]
    error = np.abs(actual - expected).max(initial=0.0)
    if rule == "exact":
        assert np.array_equal(actual, expected), (
            f"{name}:{array}: {int((actual != expected).sum())} of {expected.size} entries differ")
    elif "abs" in rule:
        assert error <= rule["abs"], f"{name}:{array}: max |diff| {error:.3g} > {rule['abs']}"
    else:
        scale = np.abs(expected).max(initial=0.0)
        relative = error / scale if scale > 0 else error
        assert relative <= rule["rel"], f"{name}:{array}: relative error {relative:.3g} > {rule['rel']}"


def assert_outputs(name: str, data: Mapping[str, np.ndarray], actual: Mapping[str, object],
                   expected: Mapping[str, np.ndarray] | None = None) -> None:
    """Every ``out_*`` / ``grad_*`` array of the fixture is checked: ``actual`` must name each one.
    ``expected`` replaces a stored array where the README says to compare a transform of it."""
    checked = sorted(k for k in data if k.startswith(("out", "grad_")))
    assert sorted(actual) == checked, f"{name}: checks {sorted(actual)}, fixture has {checked}"
    for key in checked:
        assert_close(name, key, actual[key], (expected or {}).get(key, data[key]))


def check(name: str, array: str, expected, actual) -> None:
    """``assert_close`` with the propagation tests' argument order (expected before actual)."""
    assert_close(name, array, actual, expected)
