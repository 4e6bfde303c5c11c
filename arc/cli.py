"""Command-line flags generated from config dataclasses, so the CLI and the configs never drift apart.

Each field `max_steps: int = 1000  # optimizer steps` becomes `--max-steps N` with the field's trailing
comment as its help text; with a prefix, `steps` of TTTConfig becomes `--ttt-steps`. Only the flags
given on the command line are returned, so a caller can tell "left at its default" from "set
explicitly" (--resume uses that: the saved config, plus what was given).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re

_CONVERTERS = {"int": int, "float": float, "str": str}


def _field_comments(cls) -> dict[str, str]:
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE))


def _converter(annotation: str):
    base = annotation.replace(" | None", "")
    if base.startswith("tuple"):
        return lambda text: tuple(s for s in text.split(",") if s)
    return _CONVERTERS.get(base)


def add_config_flags(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """One flag per field of plain type (int, float, str, bool, tuple, optional ones); nested configs
    and free-form dicts are skipped."""
    comments = _field_comments(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        flag = "--" + (prefix + f.name).replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{comments.get(f.name, '')} (default: {default})"
        dest = prefix.replace("-", "_") + f.name
        if f.type == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif (convert := _converter(f.type)) is not None:
            group.add_argument(flag, dest=dest, type=convert, default=argparse.SUPPRESS, help=help_text)


def given_flags(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    """The fields of cls set on the command line (without the prefix)."""
    names = {prefix.replace("-", "_") + f.name: f.name for f in dataclasses.fields(cls)}
    return {names[k]: v for k, v in vars(args).items() if k in names}
