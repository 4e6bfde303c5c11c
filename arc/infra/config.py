"""Command-line flags generated from config dataclasses, so the CLI and the configs never drift apart.

Each field `max_steps: int = 1000  # optimizer steps` becomes `--max-steps N` with the field's trailing
comment as its help text. Configs nest (TrainConfig holds a ModelConfig and a LoRAConfig) but the flags
stay flat: a nested config's fields become flags of their own, with the prefix the field's metadata
names (`lora: LoRAConfig = field(..., metadata={"flags": "lora-"})` gives `--lora-rank`); a field with
`metadata={"flag": False}` gets none (values the program derives, such as the task table's size).

Only the flags given on the command line are returned (as a nested dict), so a caller can tell "left
at its default" from "set explicitly" (--resume uses that: the saved config, plus what was given).
`build_config` turns such a dict, or a saved config.json section, back into the dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

from arc.infra.errors import ConfigError

_CONVERTERS = {"int": int, "float": float, "str": str}


def _field_comments(cls) -> dict[str, str]:
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE))


def _converter(annotation: str):
    base = annotation.replace(" | None", "")
    if base.startswith("tuple"):
        return lambda text: tuple(s for s in text.split(",") if s)
    return _CONVERTERS.get(base)


def _nested(cls) -> dict[str, type]:
    """The fields of cls whose type is itself a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _walk(cls, prefix: str, path: tuple[str, ...], default):
    """(flag, dest, field, default value, path to the field) for every flag of cls, nested ones included."""
    nested = _nested(cls)
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if f.name in nested:
            yield from _walk(nested[f.name], prefix + f.metadata.get("flags", ""), path + (f.name,), value)
        elif f.metadata.get("flag", True):
            yield "--" + (prefix + f.name).replace("_", "-"), (prefix + f.name).replace("-", "_"), f, value, path + (f.name,)


def add_config_flags(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """One flag per field of plain type (int, float, str, bool, tuple, optional ones), nested configs'
    fields included (flat, with their prefixes)."""
    group = parser.add_argument_group(cls.__name__)
    comments: dict[type, dict[str, str]] = {}
    for flag, dest, f, default, path in _walk(cls, prefix, (), cls()):
        owner = _owner(cls, path)
        help_text = f"{comments.setdefault(owner, _field_comments(owner)).get(f.name, '')} (default: {default})"
        if f.type == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif (convert := _converter(f.type)) is not None:
            group.add_argument(flag, dest=dest, type=convert, default=argparse.SUPPRESS, help=help_text)


def _owner(cls, path: tuple[str, ...]) -> type:
    """The dataclass that declares the field at path (cls itself, or a nested config)."""
    for name in path[:-1]:
        cls = _nested(cls)[name]
    return cls


def flag_names(cls) -> dict[tuple[str, ...], str]:
    """The flag of every field of cls, keyed by the field's path ({("lora", "rank"): "--lora-rank", ...})."""
    return {path: flag for flag, _, _, _, path in _walk(cls, "", (), cls())}


def given_flags(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    """The fields of cls set on the command line, as a nested dict ({"model": {"d_model": 256}, ...})."""
    given: dict = {}
    values = vars(args)
    for _, dest, _, _, path in _walk(cls, prefix, (), cls()):
        if dest in values:
            target = given
            for name in path[:-1]:
                target = target.setdefault(name, {})
            target[path[-1]] = values[dest]
    return given


def build_config(cls, values: dict, base=None):
    """cls built from a nested dict of values on top of base (default: cls()); nested configs are merged
    field by field, lists become tuples where the field is a tuple, keys cls does not have are refused."""
    base = cls() if base is None else base
    nested = _nested(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    changes = {}
    for name, value in values.items():
        if name in nested:
            value = build_config(nested[name], value, getattr(base, name))
        elif isinstance(value, list) and known[name].type.startswith("tuple"):
            value = tuple(value)
        changes[name] = value
    return dataclasses.replace(base, **changes)
