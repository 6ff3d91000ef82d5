"""The ``wsss-pipe`` command line: one subcommand per DVC stage.

Every subcommand reads ``params.yaml`` (``--params``) with ``--set section.key=value`` overrides, validates
it before anything is written, and turns user errors (bad parameters, bad data, missing inputs) into one
line on stderr and exit status 2.
"""
from __future__ import annotations

import importlib
import os
import shlex
import signal
import sys
from typing import Callable, List, Optional

import typer

from pipeline.errors import ArgumentError, WsssError
from stages.table import PROPAGATION, STAGES, Stage, argument_key

app = typer.Typer(
    help=(
        "Weakly supervised semantic segmentation as a DVC pipeline. Each subcommand is one stage of "
        "dvc.yaml; `dvc repro` runs them in order. Settings come from params.yaml; override any of them "
        "for one run with --set section.key=value (e.g. --set train_cls.epochs=2)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = typer.Option("params.yaml", "--params", "-p", help="Parameters file.")
SetOption = typer.Option(None, "--set", "-s", help="Override a parameter: section.key=value (repeatable).")


MethodOption = typer.Option(None, "--method", "-m", help="CAM method, a name of pipeline.cam.methods (overrides `method`).")
RecipeOption = typer.Option(None, "--recipe", "-r",
                            help="A recipe overlay (recipes/voc/seam.yaml) merged over the params file (repeatable).")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``docker stop``) as an exception, so that every stage cleans up as on
    Ctrl-C: temporary outputs removed, pool workers stopped."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


# stages that run under torchrun (DDP training, sharded per-image work); the others run once
DISTRIBUTED = {stage.module for stage in STAGES.values() if stage.distributed}


def _torchrun(module: str) -> None:
    """``WSSS_TORCHRUN="--nproc_per_node 8"`` (torchrun's options): run this command under torchrun
    instead (replacing this process, so that signals reach torchrun). A stage that cannot run as several
    processes refuses to."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if module not in DISTRIBUTED:
            typer.echo(f"error: {module} does not run under torchrun; start it as one process", err=True)
            raise typer.Exit(2)
        return
    options = os.environ.get("WSSS_TORCHRUN", "").strip()
    if options and options.lower() != "off" and module in DISTRIBUTED:
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *shlex.split(options),
                                  "-m", "stages", *sys.argv[1:]])


# per-image stages whose work is a network forward: on one machine with several visible GPUs they shard
# across all of them by default (one torchrun process per GPU), unless WSSS_TORCHRUN says otherwise
GPU_PER_IMAGE = {stage.module for stage in STAGES.values() if stage.gpu_per_image}


def _all_local_gpus(module: str, device: str) -> None:
    """Re-run a GPU per-image stage under ``torchrun --standalone --nproc_per_node <GPUs>`` when several
    GPUs are visible, the stage may use CUDA (``device`` auto or cuda) and no launcher was asked for or
    refused (``WSSS_TORCHRUN=off`` keeps one process)."""
    if module not in GPU_PER_IMAGE or int(os.environ.get("WORLD_SIZE", "1")) > 1 or device not in ("auto", "cuda"):
        return
    if os.environ.get("WSSS_TORCHRUN", "").strip():
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1:
        typer.echo(f"{module}: {gpus} GPUs visible: sharding over all of them (WSSS_TORCHRUN=off: one process)",
                   err=True)
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={gpus}", "-m", "stages", *sys.argv[1:]])


def _run(module: str, params_path: str, overrides: Optional[List[str]], method: Optional[str] = None,
         entry: str = "run", kwargs: Optional[dict] = None, recipes: Optional[List[str]] = None) -> None:
    from stages.config import load_params

    _torchrun(module)
    overrides = list(overrides or [])
    if method is not None:
        overrides.append(f"method={method}")
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    params = None
    try:
        params = load_params(params_path, overrides, recipes or ())
        _all_local_gpus(module, params.device)
        with _locked(params, module, entry, (kwargs or {}).get("name")):
            result = getattr(importlib.import_module(f"stages.{module}"), entry)(params, **(kwargs or {}))
    except ArgumentError as exc:  # a library argument out of range: name the params key it came from
        stage = f"{module}@{kwargs['name']}" if kwargs and "name" in kwargs else module
        key = argument_key(stage, exc.argument, params) if params is not None else exc.argument
        typer.echo(f"error: {key}: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    except WsssError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # read-only folder, full disk...: one line naming the path, not a traceback
        typer.echo(f"error: {_os_error(exc, params)}", err=True)
        raise typer.Exit(2) from None
    except Terminated:
        typer.echo("terminated: no output was written", err=True)
        raise typer.Exit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: no output was written", err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if isinstance(result, dict) and "miou" in result:
        typer.echo(f"{module}: mIoU {100 * result['miou']:.2f}", err=True)


# stages whose outputs are per method: their lock is per method too (stages.locking)
PER_METHOD = {stage.module for stage in STAGES.values() if stage.per_method}


def _locked(params, module: str, entry: str, prop_method: Optional[str] = None):
    """The stage's exclusive lock on the outputs tree (:mod:`stages.locking`); rank 0 alone takes it, and
    only for a stage run (``inspect --id`` writes one file elsewhere)."""
    import contextlib

    from stages.locking import stage_lock

    if entry != "run" or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    stage = f"{module}.{prop_method}" if prop_method else module  # one lock per propagation method
    return stage_lock(params.paths.outputs, stage, params.method if module in PER_METHOD else None)


def _os_error(exc: OSError, params) -> str:
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    reason = exc.strerror or str(exc).splitlines()[0] or type(exc).__name__
    if where:
        return f"{where}: {reason}"
    return f"{reason} (writing under paths.outputs={params.paths.outputs})" if params is not None else reason


def _stage(stage: Stage) -> Callable:
    module = stage.name
    if stage.per_method:
        def command(params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                    method: Optional[str] = MethodOption, recipe: Optional[List[str]] = RecipeOption) -> None:
            _run(module, params, set_, method, recipes=recipe)
    else:
        def command(params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                    recipe: Optional[List[str]] = RecipeOption) -> None:
            _run(module, params, set_, recipes=recipe)
    command.__doc__ = stage.summary
    return app.command(stage.command)(command)


for _each in STAGES.values():
    if _each.name != "inspect" and not _each.item:  # inspect: its own command below (--id)
        _stage(_each)


def _propagation_stage(module: str) -> Callable:
    """A generic propagation stage: ``wsss-pipe <stage> <propagation method> [--method <CAM method>]``
    (the table's ``<stage>@<method>`` entries)."""
    stage = next(each for each in STAGES.values() if each.module == module)

    def command(prop_method: str = typer.Argument(..., metavar="PROPAGATION",
                                                  help="Propagation method: " + ", ".join(PROPAGATION)),
                params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                method: Optional[str] = MethodOption, recipe: Optional[List[str]] = RecipeOption) -> None:
        from pipeline.propagation import list_propagation

        if prop_method not in list_propagation():
            typer.echo(f"error: unknown propagation method {prop_method!r}; choose one of "
                       f"{', '.join(list_propagation())}", err=True)
            raise typer.Exit(2)
        _run(module, params, set_, method, kwargs={"name": prop_method}, recipes=recipe)
    command.__doc__ = stage.summary
    return app.command(module.replace("_", "-"))(command)


for _module in dict.fromkeys(each.module for each in STAGES.values() if each.item):
    _propagation_stage(_module)


@app.command("inspect", help=STAGES["inspect"].summary)
def inspect_command(params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                    method: Optional[str] = MethodOption,
                    image_id: Optional[str] = typer.Option(None, "--id", help="Write one image's PNG panel instead."),
                    out: Optional[str] = typer.Option(None, "--out", "-o", help="Where --id writes its PNG."),
                    recipe: Optional[List[str]] = RecipeOption) -> None:
    _run("inspect", params, set_, method, entry="run" if image_id is None else "panel",
         kwargs={} if image_id is None else {"image_id": image_id, "path": out}, recipes=recipe)


@app.command("recipe")
def recipe_command(recipe: str = typer.Argument(..., help="Recipe overlay, e.g. recipes/voc/seam.yaml."),
                   params: str = ParamsOption,
                   dvc: bool = typer.Option(False, "--dvc", help="Print the `dvc exp run -S ...` command instead.")) -> None:
    """Validate a published pipeline's recipe over the params file and say what it reproduces."""
    from stages.recipes import describe, dvc_command

    try:
        typer.echo(dvc_command(recipe, params) if dvc else describe(recipe, params))
    except WsssError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("coco")
def coco_command(coco_root: str = typer.Argument(..., help="COCO 2014 root: train2014/, val2014/, annotations/."),
                 out: str = typer.Argument(..., help="VOC-layout root to write (JPEGImages/ links, masks, splits)."),
                 limit: Optional[int] = typer.Option(None, help="Only the first N images of each split (a trial run)."),
                 workers: int = typer.Option(0, help="Processes writing masks; 0 = all cores.")) -> None:
    """Convert COCO 2014 instance annotations into the VOC layout (80 classes, WSSS splits train2014 / val2014)."""
    from pipeline.data.coco import convert_coco

    try:
        counts = convert_coco(coco_root, out, limit=limit, workers=workers or None)
    except WsssError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(", ".join(f"{split}: {n} images" for split, n in counts.items()))


@app.command("summary")
def summary_command(params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                    method: Optional[str] = MethodOption,
                    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """One table of the run: each stage's mIoU, its gain over what it refines, how it was measured, its time."""
    _run("summary", params, set_, method, kwargs={"as_json": as_json})


@app.command("doctor")
def doctor_command(params: str = ParamsOption, set_: Optional[List[str]] = SetOption,
                   limit: int = typer.Option(10, "--limit", help="At most this many problem lines per split.")) -> None:
    """Check the machine (Python, torch, CUDA, AMP, dense CRF, backbone weights) and the data at data.root."""
    _run("doctor", params, set_, kwargs={"limit": limit})


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
