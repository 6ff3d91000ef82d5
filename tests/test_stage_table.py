"""dvc.yaml declares exactly what each stage of stages/table.py reads and writes, and the table declares
every params key the stage's code reads (found in the code: ``params.<section>.<key>`` in the stage's
module and in the stages functions it hands ``params`` to)."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from stages.artifacts import ARTIFACTS
from stages.table import CRF_KERNELS, STAGES, variables

ROOT = Path(__file__).resolve().parents[1]


def _expanded(stages: dict) -> dict:
    """dvc.yaml's stages, a ``foreach`` stage expanded into one ``<name>@<item>`` per item (as DVC does)."""
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for item in stage["foreach"]:
            out[f"{name}@{item}"] = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", str(item)))
    return out


DVC = _expanded(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
DVC_STAGES = [stage for stage in STAGES.values() if stage.dvc]
# settings that change how fast a stage runs, never what it writes; and the outputs root, in every path
EXEMPT = {"device", "workers", "paths.outputs"}
# the methods of Params and of its sections, and the keys they read (relative to their section)
METHOD_READS = {"method_options": ("method", "methods.${method}"),
                "uses_generated_data": ("data.root", "synthetic.root"),
                "crf_kwargs": tuple(key.split(".")[1] for key in CRF_KERNELS),
                "measured_split": ("eval_split", "train_split")}

# stages.table's functions giving a stage's directory: the stage they take
DIRECTORIES = {"output_dir": (STAGES, lambda stage: stage),
               "artifact_dir": (ARTIFACTS, lambda artifact: ARTIFACTS[artifact].stage)}


def _paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or ()}


def test_dvc_yaml_has_exactly_the_tables_stages():
    assert set(DVC) == {stage.name for stage in DVC_STAGES}


@pytest.mark.parametrize("stage", DVC_STAGES, ids=lambda s: s.name)
def test_dvc_yaml_declares_what_the_table_says(stage):
    declared = DVC[stage.name]
    assert declared["cmd"] == f"wsss-pipe {stage.command}"  # walk@irn: wsss-pipe walk irn
    assert set(declared.get("params", ())) == set(stage.params), "params"
    assert _paths(declared.get("deps")) == set(stage.deps), "deps"
    assert _paths(declared.get("outs")) == set(stage.outs), "outs"
    assert _paths(declared.get("metrics")) == set(stage.metrics), "metrics"
    assert _paths(declared.get("plots")) == set(stage.plots), "plots"


@lru_cache(maxsize=None)
def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "stages" / f"{name}.py").read_text())


def _functions(module: str) -> dict[str, tuple[str, ast.FunctionDef]]:
    """Top-level functions visible in stages module ``module``: its own and those imported from stages."""
    tree = _module(module)
    found = {node.name: (module, node) for node in tree.body if isinstance(node, ast.FunctionDef)}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            other = node.module.split(".", 1)[1]
            if (ROOT / "stages" / f"{other}.py").is_file():
                own = {n.name: n for n in _module(other).body if isinstance(n, ast.FunctionDef)}
                found |= {a.name: (other, own[a.name]) for a in node.names if a.name in own}
    return found


def _chain(node: ast.AST, aliases: dict[str, list[str]], constants: dict | None = None) -> list[str] | None:
    """``params.a.b`` as [a, b]; ``cfg.b`` with ``cfg = params.a`` too; ``params.a[name].b`` as [a, x, b]
    when ``name`` is a known constant argument x (a propagation method's section)."""
    parts = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Subscript):
            key = node.slice
            value = key.value if isinstance(key, ast.Constant) else (constants or {}).get(getattr(key, "id", ""))
            if not isinstance(value, str):
                return None
            parts.append(value)
        else:
            parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return aliases[node.id] + list(reversed(parts))


def _taken(test: ast.AST, constants: dict[str, str]) -> bool | None:
    """The value of ``name == "constant"`` when ``name`` is a known constant argument, else None."""
    if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id in constants
            and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.comparators[0], ast.Constant)):
        return constants[test.left.id] == test.comparators[0].value
    return None


def _reads(module: str, function: ast.FunctionDef, seen: set, constants: dict | None = None) -> set[str]:
    """``params.a.b`` read in ``function`` (as ``a.b``; a method of Params or a section: the keys it
    reads), and in the stages functions it passes ``params`` to (with their string arguments, so that
    ``if step == "labels":`` follows the branch taken)."""
    constants = constants or {}
    key = (module, function.name, tuple(sorted(constants.items())))
    if key in seen:
        return set()
    seen.add(key)
    functions, reads, aliases = _functions(module), set(), {"params": []}

    def record(chain: list[str]) -> None:
        if chain and chain[-1] in METHOD_READS:
            reads.update(".".join(chain[:-1] + [key]) for key in METHOD_READS[chain[-1]])
        elif chain:
            reads.add(".".join(chain[:2]))

    def visit_block(statements: list[ast.stmt]) -> bool:
        """Visit ``statements`` up to a return reached for sure; whether one was."""
        for statement in statements:
            if visit(statement) or isinstance(statement, ast.Return):
                return True
        return False

    def visit(node: ast.AST) -> bool:
        if isinstance(node, ast.If) and _taken(node.test, constants) is not None:
            return visit_block(node.body if _taken(node.test, constants) else node.orelse)
        if isinstance(node, ast.Assign) and len(node.targets) == 1:  # cfg = params.x; a, b = params.x, params.y
            target, value = node.targets[0], node.value
            pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                     else [(target, value)])
            for name, expr in pairs:
                chain = _chain(expr, aliases, constants) if isinstance(name, ast.Name) else None
                if chain and len(chain) == 1:
                    aliases[name.id] = chain
                    visit_children_of(expr)
                    break
            else:
                visit_children_of(node)
            return False
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            chain = _chain(node, aliases, constants)
            if chain is not None:
                record(chain)
                return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DIRECTORIES:
            domain, stage_of = DIRECTORIES[node.func.id]
            argument = node.args[1]  # a name known here, or a variable: any of them
            for name in [argument.value] if isinstance(argument, ast.Constant) else domain:
                reads.update(variables(STAGES[stage_of(name)].directory) | {f"dir:{stage_of(name)}"})
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "stage_dir":
            argument = node.args[1]  # stages.common.stage_dir(params, "cam", ...), or a known argument
            name = argument.value if isinstance(argument, ast.Constant) else constants.get(getattr(argument, "id", ""))
            if name in STAGES:
                reads.add(f"dir:{name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            if any(isinstance(a, ast.Name) and a.id == "params" for a in node.args):
                callee_module, callee = functions[node.func.id]
                names = [a.arg for a in callee.args.args]
                passed = {names[i]: a.value if isinstance(a, ast.Constant) else constants.get(getattr(a, "id", ""))
                          for i, a in enumerate(node.args) if i < len(names)}
                passed = {name: value for name, value in passed.items() if isinstance(value, str)}
                reads.update(_reads(callee_module, callee, seen, passed))
        visit_children_of(node)
        return False

    def visit_children_of(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit_block(function.body)
    return reads


def _covered(key: str, declared: set[str]) -> bool:
    """``key`` declared, or within a declared section; a propagation method's section handed whole to the
    method (``params.propagation[name]``) is covered by its declared subsections: the method reads those
    its step needs (pipeline.propagation.base)."""
    if key.startswith("propagation.") and key.count(".") == 1:
        return any(d.startswith(key + ".") for d in declared)
    return key in EXEMPT or any(key == d or key.startswith(d + ".") for d in declared)


def _run_reads(stage) -> set[str]:
    """What the stage's ``run`` reads; a generic propagation stage's ``run(params, name)`` for its method."""
    run = next(n for n in _module(stage.module).body if isinstance(n, ast.FunctionDef) and n.name == "run")
    return _reads(stage.module, run, set(), {"name": stage.item} if stage.item else None)


@pytest.mark.parametrize("stage", [s for s in DVC_STAGES], ids=lambda s: s.name)
def test_the_table_declares_every_params_key_the_stage_reads(stage):
    declared = set(stage.params)
    for template in (stage.directory, *stage.deps, *stage.outs, *stage.metrics, *stage.plots):
        declared |= variables(template)  # a key in a path: a new value is a new path
    undeclared = sorted(k for k in _run_reads(stage) if not k.startswith("dir:")
                        and not _covered(k, declared))
    assert not undeclared, f"{stage.name} reads {undeclared} without declaring them"


@pytest.mark.parametrize("stage", DVC_STAGES, ids=lambda s: s.name)
def test_the_table_declares_every_stage_output_the_stage_reads(stage):
    """A directory of another stage that the code opens (stage_dir / output_dir / artifact_dir) is a dep:
    the directory itself or a file in it."""
    opened = {k.removeprefix("dir:") for k in _run_reads(stage) if k.startswith("dir:")}
    undeclared = sorted(other for other in opened - {stage.name} if not any(
        dep == STAGES[other].directory or dep.startswith(STAGES[other].directory + "/")
        or STAGES[other].directory.startswith(dep + "/") for dep in stage.inputs))
    assert not undeclared, f"{stage.name} reads the outputs of {undeclared} without declaring them"


def test_the_reads_finder_sees_a_section_read_through_a_helper():
    """eval_single reads the CRF kernels through params.crf.crf_kwargs() and single.* through single_tag."""
    run = next(n for n in _module("eval_single").body if isinstance(n, ast.FunctionDef) and n.name == "run")
    reads = _reads("eval_single", run, set())
    assert set(CRF_KERNELS) <= reads and {"single.supervision", "single.loss", "data.val_split"} <= reads


def test_the_summary_rows_read_records_the_table_declares():
    from stages.artifacts import summary_rows
    from stages.summary import TAG_VALUES

    rows = {row.key: row for row in summary_rows()}
    for row in rows.values():
        assert row.tag in TAG_VALUES
        assert all(STAGES[stage].record for stage in (row.evaluation, *row.timed))
    assert rows["cam"].timed == ("train_cls", "eval_cam") and rows["pseudo"].timed == ("eval_pseudo",)
    assert rows["gt"].evaluation == "eval_seg" and rows["gt"].split == "val"
    assert rows["irn"].evaluation == "eval_walk@irn" and rows["irn"].timed == ("train_prop@irn", "eval_walk@irn")
    assert rows["affinitynet"].split == "train"


def test_a_library_argument_is_named_by_the_params_key_the_stage_passed():
    from stages.config import load_params
    from stages.table import argument_key

    params = load_params(ROOT / "params.yaml", ["method=seam"])
    assert argument_key("prop_labels@irn", "gt_prob", params) == "propagation.irn.labels.gt_prob"
    assert argument_key("prop_labels@irn", "iterations", params) == "crf.iterations"
    assert argument_key("prop_labels@affinitynet", "iterations", params) == "propagation.affinitynet.labels.iterations"
    assert argument_key("prop_labels@affinitynet", "grid_stride", params) == "propagation.affinitynet.train.grid_stride"
    assert argument_key("walk@affinitynet", "beta", params) == "propagation.affinitynet.walk.beta"
    assert argument_key("walk@irn", "beta", params) == "propagation.irn.walk.beta"
    assert argument_key("train_prop@irn", "radius", params) == "propagation.irn.train.radius"
    assert argument_key("train_cls", "scale", params) == "methods.seam.scale"
    assert argument_key("eval_single", "scales", params) == "eval_single.scales"
    assert argument_key("train_single", "output_stride", params) == "backbone.output_stride"
    assert argument_key("doctor", "beta", params) == "beta"  # not a stage of the table: the argument alone


def test_the_cli_reads_the_table_without_importing_torch():
    """``wsss-pipe --help`` stays quick: the table and the CLI import no library code."""
    import subprocess
    import sys

    probe = "import sys, stages.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "False", result.stderr
