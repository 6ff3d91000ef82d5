"""Reading params.yaml: YAML with unique keys, recipe overlays, ``--set`` overrides, validation errors
that name the key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.errors import ConfigError
from stages.config.methods import validate_method_options
from stages.config.params import Params


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping (a section written twice) is an
    error instead of the last one silently winning."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"line {line}: key {key!r} is given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_tree(path: str | Path) -> dict:
    """The mapping in YAML file ``path`` (a params file or a recipe overlay)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    try:
        tree = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return tree


def merge_tree(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into a copy of ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tree(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = (),
                recipes: list[str] | tuple[str, ...] = ()) -> Params:
    """Read and validate ``path`` with the ``recipes`` overlays (recipes/*/*.yaml) merged over it, in
    order, then the ``section.key=value`` overrides on top."""
    tree = read_tree(path)
    for recipe in recipes:
        tree = merge_tree(tree, read_tree(recipe))
    path = " + ".join(str(p) for p in (path, *recipes))  # error messages name every file merged
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        params = Params.model_validate(tree)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        got = error.get("input")
        detail = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            detail = "unknown key"
        if error["loc"] == ("propagation",) and ": " in detail:  # a method's own section names its key
            sub, detail = detail.split(": ", 1)
            key, got = f"propagation.{sub}", {}  # the method's message carries its own "(got ...)"
        suffix = ("" if error["type"] == "extra_forbidden" or isinstance(got, dict) or repr(got) in detail
                  else f" (got {got!r})")
        raise ConfigError(f"{path}: {key}: {detail}{suffix}") from None
    for name, options in params.methods.items():
        if not isinstance(options, dict):
            raise ConfigError(f"{path}: methods.{name}: must be a mapping of options")
        params.methods[name] = validate_method_options(name, options)
    return params
