"""Concurrency and operating-system faults on one outputs tree (issue 20): concurrent runs of the same and of
different stages, a held stage lock, a nearly full filesystem (a small tmpfs), read-only folders (read-only
bind mounts). Afterwards every published directory is complete and every failure left the previous output
intact, with nothing half-written beside it. Mounting needs root on Linux; without it those tests skip."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import deadline

from conftest import REPO
from pipeline.engine.atomic import OWNER_MARKER
from stages.cli import app
from test_bad_input import TINY, project, runner  # noqa: F401  (project: the shared fixture)

pytestmark = pytest.mark.slow
TIMEOUT_S = 180


@pytest.fixture(autouse=True)
def _deadline():
    with deadline(TIMEOUT_S):
        yield


def _items(root: Path, out: Path, *extra: str) -> list[str]:
    items = [f"paths.outputs={out}", f"data.root={root}", *TINY, *extra]
    return [a for i in items for a in ("--set", i)]


def _cli(stage: str, root: Path, out: Path, *extra: str):
    return runner.invoke(app, [stage, "-p", str(REPO / "params.yaml"), *_items(root, out, *extra)])


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _no_leftovers(out: Path) -> None:
    """No temporary file or directory, no ``.old`` copy, no lock file (keyed ``.partial`` work may stay)."""
    left = [p for p in out.rglob(".*") if p.name != OWNER_MARKER and not p.name.endswith(".partial")
            and not any(parent.name.endswith(".partial") for parent in p.parents)
            and p.name not in (".locks", ".resume")]
    assert not left, left
    assert not (out / ".locks").exists() or not list((out / ".locks").iterdir())


@pytest.fixture
def tree(project, tmp_path):
    """A copy of the shared project's outputs with crf and eval-cam published once (the references)."""
    root, out = project[0], tmp_path / "out"
    shutil.copytree(project[1], out)
    for stage in ("crf", "eval-cam"):
        result = _cli(stage, root, out)
        assert result.exit_code == 0, result.output
    return root, out


COMPLETE = {"crf/cam": 4, "eval_cam/cam": 4, "train_cls/cam": 5}  # files published by each (marker aside)
TIMED = ("metrics.json", "details.json")  # hold the stage's wall time: equal apart from it


def _assert_complete(out: Path, reference: dict[str, dict[str, bytes]]) -> None:
    for folder, count in COMPLETE.items():
        files = _snapshot(out / folder)
        assert OWNER_MARKER in files and len(files) - 1 == count, (folder, sorted(files))
        if folder in reference:
            untimed = {name: data for name, data in files.items() if name not in TIMED}
            assert untimed == {name: data for name, data in reference[folder].items() if name not in TIMED}, folder


def test_concurrent_runs_of_the_same_and_of_different_stages(tree):
    root, out = tree
    reference = {folder: _snapshot(out / folder) for folder in ("crf/cam", "eval_cam/cam")}
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    stages = ["crf", "crf", "crf", "eval-cam", "eval-cam", "train-cls", "train-cls"]
    procs = [subprocess.Popen([sys.executable, "-m", "stages", stage, "-p", str(REPO / "params.yaml"),
                               *_items(root, out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for stage in stages]
    outcomes = []
    for stage, proc in zip(stages, procs):
        _, stderr = proc.communicate(timeout=TIMEOUT_S - 30)
        outcomes.append((stage, proc.returncode, stderr))
    for stage, code, stderr in outcomes:
        if code != 0:  # the only acceptable failure: the stage was running already
            lines = stderr.strip().splitlines()
            assert code == 2 and len(lines) == 1 and "holds this lock (pid " in lines[0], (stage, stderr)
    for stage in set(stages):
        assert any(code == 0 for s, code, _ in outcomes if s == stage), (stage, outcomes)
    _assert_complete(out, reference)
    _no_leftovers(out)


def test_a_held_lock_is_a_one_line_error_naming_its_holder(tree):
    from stages.locking import stage_lock

    root, out = tree
    before = _snapshot(out / "crf" / "cam")
    with stage_lock(str(out), "crf", "cam") as lock:
        result = _cli("crf", root, out)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and str(lock) in lines[0] and f"pid {os.getpid()} on " in lines[0], result.output
        assert _cli("eval-cam", root, out).exit_code == 0  # another stage is not held up
    assert _snapshot(out / "crf" / "cam") == before
    assert _cli("crf", root, out).exit_code == 0  # released with its holder
    _no_leftovers(out)


def test_a_run_that_meets_the_lock_before_its_holder_wrote_its_line_still_names_it(tmp_path):
    import fcntl
    import threading

    from pipeline.errors import WsssError
    from stages.locking import _acquire

    path = tmp_path / "crf.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, its line not written yet
    writer = threading.Timer(0.2, os.pwrite, (fd, b"pid 4242 on host since now", 0))
    writer.start()
    try:
        with pytest.raises(WsssError, match=r"holds this lock \(pid 4242 on host"):
            _acquire(path, "crf")
    finally:
        writer.join()
        os.close(fd)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _can_mount(tmp_path: Path) -> str | None:
    """None when this process may mount (root on Linux, mount allowed); else why not."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs or a read-only bind needs root on Linux"
    probe = tmp_path / "mount_probe"
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"mount is not allowed here ({getattr(exc, 'stderr', '') or exc})".strip()
    subprocess.run(["umount", str(probe)], check=True)
    return None


@pytest.fixture
def mounts(tmp_path):
    reason = _can_mount(tmp_path)
    if reason:
        pytest.skip(reason)
    mounted: list[Path] = []
    yield mounted
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _read_only(path: Path, mounted: list[Path]) -> None:
    _mount("--bind", str(path), str(path))
    mounted.append(path)
    _mount("-o", "remount,bind,ro", str(path))


def _fill(directory: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``directory`` but about ``leave_bytes``."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    if leave_bytes:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave_bytes))
    return filler


@pytest.mark.parametrize("stage, folder, leave", [("crf", "crf/cam", 0), ("crf", "crf/cam", 12_000),
                                                  ("train-cls", "train_cls/cam", 0), ("eval-cam", "eval_cam/cam", 0)])
def test_a_full_disk_is_a_one_line_error_and_keeps_the_previous_output(tree, tmp_path, mounts, stage, folder, leave):
    root, out = tree
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    mounts.append(disk)
    shutil.copytree(out, disk / "out")
    out = disk / "out"
    reference = {f: _snapshot(out / f) for f in COMPLETE}
    filler = _fill(disk, leave)
    result = _cli(stage, root, out)
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("warning:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "No space left on device" in lines[0], result.output
    assert str(out) in lines[0], lines[0]
    assert {f: _snapshot(out / f) for f in COMPLETE} == reference  # nothing replaced, nothing lost
    _no_leftovers(out)
    filler.unlink()
    result = _cli(stage, root, out)  # with room again it completes (resuming what it kept)
    assert result.exit_code == 0, result.output
    _assert_complete(out, {f: reference[f] for f in ("crf/cam", "eval_cam/cam")})
    _no_leftovers(out)


def test_read_only_outputs_tree_is_a_one_line_error(tree, mounts):
    root, out = tree
    before = _snapshot(out)
    _read_only(out, mounts)
    result = _cli("crf", root, out)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: paths.outputs:"), result.output
    assert str(out) in lines[0]
    assert _snapshot(out) == before


def test_read_only_stage_folder_is_not_replaced(tree, mounts):
    root, out = tree
    before = _snapshot(out / "crf" / "cam")
    _read_only(out / "crf" / "cam", mounts)
    result = _cli("crf", root, out, "crf.bg_threshold=0.4")  # another key: a new output to publish
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(out / "crf" / "cam") in lines[0] and "not writable" in lines[0], lines[0]
    assert _snapshot(out / "crf" / "cam") == before  # the new output was not published over it
    assert not (out / "crf" / ".cam.old").exists()
    _no_leftovers(out)


def test_foreign_files_are_never_replaced_but_an_output_of_ours_is(tmp_path):
    from pipeline.engine.atomic import atomic_dir
    from pipeline.errors import DataError

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "README.md").write_text("notes")
    with pytest.raises(DataError, match=r"data: holds 1 files that wsss-pipe did not write \(e.g. README.md\)"):
        with atomic_dir(foreign) as work:
            (work / "index.json").write_text("{}")
    assert sorted(p.name for p in foreign.iterdir()) == ["README.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    # an older output without the marker whose files the new output rewrites (DVC restored it) is replaced
    (foreign / "README.md").unlink()
    (foreign / "index.json").write_text("old")
    with atomic_dir(foreign) as work:
        (work / "index.json").write_text("new")
    assert (foreign / "index.json").read_text() == "new" and (foreign / OWNER_MARKER).is_file()
    (foreign / "extra.txt").write_text("written later into an output of ours")
    with atomic_dir(foreign) as work:
        (work / "index.json").write_text("newer")
    assert sorted(p.name for p in foreign.iterdir()) == [OWNER_MARKER, "index.json"]
    file_target = tmp_path / "a_file"
    file_target.write_text("x")
    with pytest.raises(DataError, match="a_file: exists and is not a directory"):
        with atomic_dir(file_target):
            pass
    assert file_target.read_text() == "x"


def test_pool_stops_cleanly_on_a_worker_error_and_on_a_consumer_error():
    from stages.common import parallel_map

    for _ in range(5):
        start = time.perf_counter()
        with pytest.raises(ValueError, match="item 3"):
            list(parallel_map(_fail_at_3, list(range(16)), 2, "probe", chunksize=1))
        assert time.perf_counter() - start < 20  # the sleeping workers were stopped, not waited for
    start = time.perf_counter()
    with pytest.raises(KeyError):
        for value in parallel_map(_slow_square, list(range(16)), 2, "probe", chunksize=1):
            if value == 1:
                raise KeyError("consumer")
    assert time.perf_counter() - start < 20


def _fail_at_3(item: int) -> int:
    if item == 3:
        raise ValueError("item 3")
    time.sleep(30 if item > 3 else 0)
    return item


def _slow_square(item: int) -> int:
    time.sleep(0 if item < 2 else 30)
    return item * item
