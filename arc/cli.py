"""Command-line flags generated from a config dataclass, so the CLI and the config never drift apart.

Each field `max_steps: int = 1000  # optimizer steps` becomes `--max-steps N` with the field's trailing
comment as its help text. Only the flags given on the command line are returned, so a caller can tell
"left at its default" from "set explicitly" (--resume uses that: the saved config, plus what was given).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re


def _field_comments(cls) -> dict[str, str]:
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE))


def _converter(annotation: str):
    base = annotation.replace(" | None", "")
    if base.startswith("tuple"):
        return lambda text: tuple(s for s in text.split(",") if s)
    return {"int": int, "float": float, "str": str}[base]


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.type == "dict":
            continue  # free-form fields are not flags
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{comments.get(f.name, '')} (default: {default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=_converter(f.type), default=argparse.SUPPRESS, help=help_text)


def given_flags(args: argparse.Namespace, cls) -> dict:
    """The config fields set on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
