"""Keyed work directories of per-image stages: kept after a failure, reused by the same key, discarded by
another, published whole."""
import pytest

from pipeline.engine.atomic import OWNER_MARKER, atomic_dir, partial_dir


def test_keyed_work_directory_survives_failure_and_is_reused(tmp_path):
    out = tmp_path / "cam" / "seam"
    with pytest.raises(RuntimeError):
        with atomic_dir(out, key="k1") as work:
            assert work == partial_dir(out, "k1") == tmp_path / "cam" / ".seam.k1.partial"
            (work / "a.npz").write_bytes(b"a")
            (work / ".b.npz.x1.tmp.npz").write_bytes(b"half")  # a file a killed run was writing
            raise RuntimeError("killed")
    assert not out.exists() and (partial_dir(out, "k1") / "a.npz").read_bytes() == b"a"

    with atomic_dir(out, key="k1") as work:
        assert sorted(p.name for p in work.iterdir()) == ["a.npz"]  # finished file kept, half file gone
        (work / "b.npz").write_bytes(b"b")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_MARKER, "a.npz", "b.npz"]
    assert [p.name for p in out.parent.iterdir()] == ["seam"]


def test_another_key_discards_the_work_of_the_old_one(tmp_path):
    out = tmp_path / "crf" / "cam"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, key="old") as work:
            (work / "a.png").write_bytes(b"old")
            raise KeyboardInterrupt
    with atomic_dir(out, key="new") as work:
        assert list(work.iterdir()) == []
        (work / "a.png").write_bytes(b"new")
    assert (out / "a.png").read_bytes() == b"new"
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam"]
    with atomic_dir(out) as work:  # an unkeyed run of the same output leaves no work directory either
        (work / "x").write_bytes(b"")
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam"]
