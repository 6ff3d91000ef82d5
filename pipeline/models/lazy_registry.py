"""Registries whose entries are imported on first use: a family of methods names each member as
``"module:attribute"``, so that listing the names, validating params.yaml against them and the stages that
compute nothing with a network never import torch (issue 19: every stage is its own process).

:func:`init_signature` reads a class's constructor from its source, for the params validation of the CAM
methods' options (:mod:`stages.config.methods`): it falls back to importing the class when the source does
not state the signature plainly (non-literal defaults, annotations other than builtins and ``typing``).
"""
from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# the modules whose names an annotation may use and still be read without importing the class's module
_ANNOTATION_MODULES = ("typing", "collections.abc")


def resolve(target: str) -> Any:
    """The object ``"package.module:attribute"`` names (its module imported)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class LazyRegistry(Mapping):
    """A read-only mapping name -> object whose keys are known without importing anything: the object
    ``"module:attribute"`` is imported on the first lookup of its name."""

    def __init__(self, targets: dict[str, str]):
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def target(self, name: str) -> str:
        """Where ``name``'s object lives, ``"module:attribute"``."""
        return self._targets[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            self._loaded[name] = resolve(self._targets[name])
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __repr__(self) -> str:
        return f"LazyRegistry({self._targets!r})"


def init_signature(target: str, unread: tuple[str, ...] = ()) -> tuple[inspect.Signature, dict[str, Any]]:
    """(signature, annotations) of the ``__init__`` of the class ``"module:Class"``: read from its source
    when it states them plainly (then nothing is imported but its parent packages; the annotations of the
    parameters ``unread`` are not read), else from the imported class (``typing.get_type_hints``; no
    annotations when they cannot be resolved)."""
    static = _static_init_signature(target, unread)
    if static is not None:
        return static
    init = resolve(target).__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that cannot be resolved: the caller falls back to the defaults' types
        hints = {}
    return inspect.signature(init), hints


class _NotPlain(Exception):
    """The source does not state the signature as literals and builtin / typing annotations."""


def _static_init_signature(target: str, unread: tuple[str, ...]) -> tuple[inspect.Signature, dict[str, Any]] | None:
    module, _, name = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text())
    cls = next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name), None)
    init = next((node for node in (cls.body if cls else ()) if isinstance(node, ast.FunctionDef)
                 and node.name == "__init__"), None)
    if init is None or init.decorator_list:
        return None  # inherited or wrapped: only the class itself knows
    try:
        return _signature(init.args, _annotation_names(tree), unread)
    except _NotPlain:
        return None


def _annotation_names(tree: ast.Module) -> dict[str, Any]:
    """What an annotation may name: the builtins and what the module imports from :data:`_ANNOTATION_MODULES`."""
    names: dict[str, Any] = dict(vars(builtins))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in _ANNOTATION_MODULES:
            source = importlib.import_module(node.module)
            names.update({alias.asname or alias.name: getattr(source, alias.name) for alias in node.names
                          if alias.name != "*"})
    return names


def _signature(args: ast.arguments, names: dict[str, Any],
               unread: tuple[str, ...]) -> tuple[inspect.Signature, dict[str, Any]]:
    if args.posonlyargs or args.vararg or args.kwarg:
        raise _NotPlain()
    kinds = ([(arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in args.args]
             + [(arg, inspect.Parameter.KEYWORD_ONLY) for arg in args.kwonlyargs])
    defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults) + list(args.kw_defaults)
    parameters, hints = [], {}
    for (arg, kind), default in zip(kinds, defaults):
        value = inspect.Parameter.empty if default is None else _literal(default)
        parameters.append(inspect.Parameter(arg.arg, kind, default=value))
        if arg.annotation is not None and arg.arg not in ("self", *unread):
            hints[arg.arg] = _annotation(arg.annotation, names)
    return inspect.Signature(parameters), hints


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _NotPlain() from None


def _annotation(node: ast.expr, names: dict[str, Any]) -> Any:
    text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ast.unparse(node)
    try:
        return eval(text, {"__builtins__": {}}, names)  # noqa: S307 - the package's own source
    except Exception:
        raise _NotPlain() from None
