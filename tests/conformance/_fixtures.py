"""Loader for the authors' golden fixtures in ``../shared/conformance`` (README.md there): tests that use
them skip, with a one-line reason, where that folder is absent (a user's clone)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO.parent / "shared" / "conformance"


def load(name: str) -> dict[str, np.ndarray]:
    """Every array of fixture ``name`` (without ``.npz``); skips the test when the fixture is absent."""
    path = FOLDER / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"conformance fixture {path} absent")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@lru_cache(maxsize=1)
def _manifest() -> dict:
    path = FOLDER / "manifest.json"
    if not path.is_file():
        pytest.skip(f"conformance manifest {path} absent")
    return json.loads(path.read_text())


def tolerance(name: str, array: str):
    """The manifest's tolerance for ``array`` of fixture ``name``: 'exact', {'abs': x} or {'rel': x}; an
    array it does not list (the pair index arrays of irn_affinity_loss) is compared exactly."""
    table = _manifest()["files"][f"{name}.npz"]["tolerance"]
    return table.get(array, table.get("*", "exact"))


def check(name: str, array: str, expected: np.ndarray, actual) -> None:
    """Assert ``actual`` matches ``expected`` (array ``array`` of fixture ``name``) within the stated
    tolerance; NaNs must coincide."""
    tol = tolerance(name, array)
    expected = np.asarray(expected)
    actual = np.asarray(actual.detach().cpu() if hasattr(actual, "detach") else actual)
    assert actual.shape == expected.shape, f"{name}.{array}: shape {actual.shape}, expected {expected.shape}"
    if tol == "exact":
        assert np.array_equal(actual, expected, equal_nan=True), (
            f"{name}.{array}: {int((actual != expected).sum())} of {expected.size} entries differ")
        return
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    nan = np.isnan(e)
    assert np.array_equal(nan, np.isnan(a)), f"{name}.{array}: NaNs at different places"
    error = float(np.abs(e - a)[~nan].max(initial=0.0))
    if "rel" in tol:
        scale = float(np.abs(e[~nan]).max(initial=0.0))
        assert error <= tol["rel"] * scale, f"{name}.{array}: relative error {error / scale:.3g} > {tol['rel']}"
    else:
        assert error <= tol["abs"], f"{name}.{array}: max abs error {error:.3g} > {tol['abs']}"
