"""Recipes: the published pipelines as params overlays (``recipes/<dataset>/<name>.yaml``).

A recipe holds only what differs from ``params.yaml`` (backbone, crops, output stride, epochs, learning
rates, CRF and walk settings of the paper) plus a ``recipe:`` section saying which figure it should
reproduce, on which split and under which protocol, where the figure comes from, the expected GPU time and
its departures from the paper. Two ways to apply one:

- ``wsss-pipe <stage> --recipe recipes/voc/seam.yaml`` merges it over ``params.yaml`` (``-p`` names another
  base file) for that command: mappings merge key by key, anything else replaces, ``--set`` applies last.
- ``eval "$(wsss-pipe recipe recipes/voc/seam.yaml --dvc)"`` runs ``dvc exp run -S key=value ...`` with
  every leaf of the recipe (``+key=value`` for keys params.yaml does not have, as Hydra requires), so
  ``dvc exp show`` records the experiment's parameters. The metadata section stays out (it is no setting).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import ConfigError
from stages.config import load_params, read_tree

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe_files(root: Path = RECIPES) -> list[Path]:
    """Every recipe overlay under ``root`` (``<dataset>/<name>.yaml``), sorted."""
    return sorted(root.glob("*/*.yaml"))


def leaves(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value of ``tree``; an empty mapping is a leaf."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, dotted + ".")
        else:
            yield dotted, value


def _has(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _hydra_value(value: Any) -> str:
    """A value in the override grammar DVC's ``-S`` reads (Hydra): YAML flow style, no spaces in lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def dvc_overrides(recipe: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """The ``-S`` arguments that turn ``params_path`` into the recipe (after validating the merge)."""
    load_params(params_path, recipes=[str(recipe)])
    base = read_tree(params_path)
    overlay = {k: v for k, v in read_tree(recipe).items() if k != "recipe"}
    return [f"{'' if _has(base, key) else '+'}{key}={_hydra_value(value)}" for key, value in leaves(overlay)]


def dvc_command(recipe: str | Path, params_path: str | Path = "params.yaml") -> str:
    """``dvc exp run -S ... -S ...`` for ``recipe``, quoted for a POSIX shell (``eval "$(...)"``)."""
    parts = ["dvc", "exp", "run"]
    for override in dvc_overrides(recipe, params_path):
        parts += ["-S", override]
    return shlex.join(parts)


def describe(recipe: str | Path, params_path: str | Path = "params.yaml") -> str:
    """The validated recipe's metadata and the settings it changes, as text."""
    params = load_params(params_path, recipes=[str(recipe)])
    if params.recipe is None:
        raise ConfigError(f"{recipe}: no recipe: section (name, paper, reproduces, gpu_time)")
    info = params.recipe
    lines = [f"{info.name}: {info.paper}"]
    for figure, detail in info.reproduces.items():
        lines.append(f"  reproduces {figure}: {json.dumps(detail)}")
    if info.gpu_time:
        lines.append(f"  expected GPU time: {info.gpu_time}")
    lines += [f"  departure: {text}" for text in info.departures]
    lines.append(f"  stages: {' '.join(pipeline_stages(params, single=is_single_stage(recipe)))}")
    overlay = {k: v for k, v in read_tree(recipe).items() if k != "recipe"}
    lines += [f"  {key} = {value!r}" for key, value in leaves(overlay)]
    return "\n".join(lines)


def pipeline_stages(params, single: bool = False) -> list[str]:
    """The stages, in DAG order, that a recipe's pipeline runs (dvc.yaml's branch for its settings):
    the single-stage branch (``single``), or CAM -> [walk] -> CRF -> DeepLab with the walk ``crf.source``
    names."""
    if single:
        return ["data", "scribbles", "train_single", "eval_single"]
    from stages.propagation import PROP_STAGES

    source = params.crf.source
    walk = [] if source == "cam" else [f"{stage}@{source}" for stage in PROP_STAGES]
    return ["data", "train_cls", "cam", "eval_cam", *walk, "crf", "eval_pseudo", "train_seg", "eval_seg"]


def is_single_stage(recipe: str | Path) -> bool:
    """True when the recipe configures the single-stage branch (a ``single:`` section)."""
    return "single" in read_tree(recipe)
