"""What each stage's process costs before its work: whether it imports torch, and how long (issue 19).

``python benchmarks/stage_processes.py imports [--src DIR]``: for every torch-free stage
(:data:`stages.table.TORCH_FREE`), the best of three wall times of a fresh ``python -c "import
stages.<name>; load_params('params.yaml')"`` run on the code in ``DIR`` (default: this checkout; an older
checkout's code gives the before), and whether torch was imported.

``python benchmarks/stage_processes.py repro DEST [--src DIR]``: a tiny ``dvc repro`` of the whole DAG
(:data:`TINY`: 16 + 8 images of 96 px, the tiny backbone, one epoch or four steps per training) of the code
in ``DIR`` in a fresh project ``DEST``; prints its wall time and, per stage process, its wall time and whether
it imported torch (a ``sitecustomize`` in ``DEST/.probe`` logs them at exit).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"synthetic.num_train": 16, "synthetic.num_val": 8, "synthetic.image_size": 96, "workers": 2,
        "backbone.name": "tiny", "backbone.pretrained": None, "train_cls.epochs": 1, "train_cls.batch_size": 8,
        "train_cls.crop_size": 64, "cam.scales": [1.0], "recam.epochs": 1,
        "propagation.affinitynet.train.epochs": 1, "propagation.affinitynet.train.crop_size": 96,
        "propagation.irn.train.epochs": 1, "propagation.irn.train.crop_size": 96,
        "propagation.irn.train.batch_size": 8, "train_seg.steps": 4, "train_seg.batch_size": 4,
        "train_seg.crop_size": 64, "train_seg.val_every": 4, "eval_seg.scales": [1.0], "eval_seg.flip": False,
        "overlays.count": 2, "single.steps": 4, "single.batch_size": 4, "single.crop_size": 64,
        "single.val_every": 4, "eval_single.scales": [1.0], "eval_single.flip": False}

PROBE = '''import atexit, os, sys, time
_start = time.time()
def _log():
    if os.path.basename(sys.argv[0]) == "wsss-pipe":
        with open(os.environ["STAGE_PROBE_LOG"], "a") as fh:
            command = " ".join(a for a in sys.argv[1:3] if not a.startswith("-"))
            fh.write(f"{command}\\t{'torch' in sys.modules}\\t{time.time() - _start:.1f}\\n")
atexit.register(_log)
'''


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
                PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"], **extra)


def imports(src: Path) -> None:
    from stages.table import TORCH_FREE

    print(f"load {Path('/proc/loadavg').read_text().split()[:3]}")
    for module in TORCH_FREE:
        code = (f"import sys, stages.{module}; from stages.config import load_params; load_params('params.yaml'); "
                "print('torch' in sys.modules)")
        times, torch = [], ""
        for _ in range(3):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", code], cwd=src, env=_env(PYTHONPATH=str(src)),
                                    capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            torch = result.stdout.strip() or f"error: {result.stderr.strip().splitlines()[-1:]}"
        print(f"{module:12s} {min(times):5.2f} s  torch imported: {torch}")
    print(f"load {Path('/proc/loadavg').read_text().split()[:3]}")


def repro(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pipeline", "stages"):
        shutil.copytree(src / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(src / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((src / "params.yaml").read_text())
    for dotted, value in TINY.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".probe").mkdir()
    (dest / ".probe" / "sitecustomize.py").write_text(PROBE)
    log = dest / ".probe" / "stages.tsv"
    env = _env(PYTHONPATH=f"{dest}{os.pathsep}{dest / '.probe'}", STAGE_PROBE_LOG=str(log))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=dest, env=env, check=True)
    shutil.copytree(src / ".dvc" / "plots", dest / ".dvc" / "plots")
    print(f"load {Path('/proc/loadavg').read_text().split()[:3]}")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=dest, env=env, capture_output=True, text=True)
    print(f"dvc repro: exit {result.returncode}, {time.perf_counter() - start:.1f} s wall")
    if result.returncode:
        print(result.stdout[-3000:], result.stderr[-3000:])
    for line in log.read_text().splitlines():
        command, torch, seconds = line.split("\t")
        print(f"{command:26s} {seconds:>6s} s  torch imported: {torch}")
    print(f"load {Path('/proc/loadavg').read_text().split()[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("imports", "repro"))
    parser.add_argument("dest", nargs="?", type=Path, help="repro: the project to create (removed first)")
    parser.add_argument("--src", type=Path, default=REPO, help="the checkout whose code runs")
    args = parser.parse_args()
    if args.mode == "imports":
        imports(args.src.resolve())
    elif args.dest is None:
        parser.error("repro needs DEST")
    else:
        repro(args.src.resolve(), args.dest.resolve())


if __name__ == "__main__":
    main()
