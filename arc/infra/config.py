"""Config dataclasses as the one home of every setting: its default, its meaning, the rule its value must
follow and whether --resume may change it. From them come the command-line flags, the checks made before
any work starts, and the reading of TOML run files (configs/*.toml).

Declaring a setting. The field

    max_steps: int = option(1000, integer(0), help="optimizer steps")

becomes `--max-steps N`, with `help` as its help text and `integer(0)` as its rule: a check that returns
None for an allowed value, else what is allowed ("must be an integer >= 0"). Without a check
(`option(True, help=...)`) it is a setting without a rule. `option(..., frozen=True)` marks a setting a
resumed run may not change (its architecture or its data); `option(..., flag=False)` a value the program
derives (the task table's size), which gets no flag; `option(..., flag="layout")` names a flag apart from
its field (LayoutConfig.name is --layout). Configs nest (TrainConfig holds a ModelConfig and a
LoRAConfig) but the flags stay flat: `lora: LoRAConfig = nested(LoRAConfig, flags="lora-")` gives
`--lora-rank`, and `omit=` leaves out fields of the nested config that mean nothing where it is nested.

Relations between settings (d_model a multiple of n_heads, a LoRA run needs --init, a flag this run would
ignore) are a method of the config that owns them, `problems(self, flag) -> list[str]`, where `flag(name)`
is the flag of one of its fields ("lora.rank") as it is spelled where the config is nested. `validate(cfg)`
runs every rule and every `problems` of a config and of the configs nested in it, and raises one
ConfigError naming each bad flag, its value and what is allowed, all of them in one message:
`--batch-size 0: must be an integer >= 1; --d-model 30 --n-heads 4: d_model must be a multiple of n_heads`.

A saved config (a section of a checkpoint's config.json) is checked by the same rules: `saved_problems`
first checks each value's JSON type against its field's, then the rules and relations, naming each key by
its path in the file (`model.d_model -32: must be an integer >= 1 and <= 65536`).

Only the flags given on the command line are returned (`given_flags`, a nested dict), so a caller can tell
"left at its default" from "set explicitly" (--resume uses that: the saved config, plus what was given).
`load_config_file` reads a TOML file into the same kind of dict (its top-level keys are fields, nested
configs are tables: `[model]`, `[lora]`), with the given flags on top. `build_config` turns such a dict,
or a saved config.json section, back into the dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import re
import typing
from pathlib import Path
from typing import Callable

from arc.infra.errors import ConfigError
from arc.infra.files import read_toml

Check = Callable[[object], "str | None"]  # None when the value is allowed, else what is allowed


# --------------------------------------------------------------------------------------------------
# Declaring settings
# --------------------------------------------------------------------------------------------------


def option(default, check: Check | None = None, *, frozen: bool = False, flag: bool | str = True, help: str = ""):
    """A config field with its rule (check), whether --resume may change it (frozen: no), whether it is a
    setting at all (flag=False: derived by the program, no flag, not in a config file; a string: the flag's
    own name, when it is not the field's) and what it means (help: the flag's help text)."""
    return dataclasses.field(default=default, metadata={"check": check, "frozen": frozen, "flag": flag, "help": help})


def nested(factory: Callable[[], object], *, flags: str = "", frozen: bool = False, omit: tuple[str, ...] = ()):
    """A config nested in another: factory builds its default (the class, or a function); its flags get the
    prefix `flags`; frozen freezes every field of it on --resume; omit names its fields that are no
    settings here (no flag, not in a config file)."""
    metadata = {"flags": flags, "frozen": frozen, "omit": tuple(omit)}
    return dataclasses.field(default_factory=factory, metadata=metadata)


# --------------------------------------------------------------------------------------------------
# Checks and bounds shared by every config (those that need ARC knowledge live in arc.data.tasks)
# --------------------------------------------------------------------------------------------------

PRECISIONS = ("auto", "bf16", "fp32")  # --precision (arc.infra.runtime.autocast_dtype)
# Upper bounds far above any useful value: beyond them a flag only ever hangs (drawing 8 x 10**12 rows for
# one batch) or ends in an allocator's or a library's exception (a seed numpy refuses, 10**12 threads).
MAX_BATCH = 4096  # rows per micro-batch, micro-batches per step
MAX_SEED = 2**32 - 1  # numpy's np.random.seed takes no more
MAX_THREADS = 1024
# Time budgets, bounded where their unit is converted (minutes to seconds, seconds per task times tasks): far
# above any run (19 years), so that every duration computed from them stays an ordinary float (--minutes 1e307
# is inf seconds, an OverflowError where a duration is printed)
MAX_MINUTES = 10**7
MAX_SECONDS = 60 * MAX_MINUTES


def integer(lo: int, hi: int | None = None) -> Check:
    def check(value):
        if type(value) is not int or value < lo or (hi is not None and value > hi):
            return f"must be an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        return None
    return check


def number(lo: float | None = None, hi: float | None = None, above: bool = False, below: bool = False) -> Check:
    """A finite number in [lo, hi]; above/below make the bound strict."""
    def check(value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (lo is None or (value > lo if above else value >= lo))
        ok = ok and (hi is None or (value < hi if below else value <= hi))
        if ok:
            return None
        bounds = [f"{'>' if above else '>='} {lo}"] if lo is not None else []
        bounds += [f"{'<' if below else '<='} {hi}"] if hi is not None else []
        return "must be a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    return check


def choice(*options: str) -> Check:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def optional(check: Check) -> Check:
    """check, or None (the field's 'unset')."""
    return lambda value: None if value is None else check(value)


def device(value) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)) else "must be auto, cpu, cuda or cuda:N"


def out_folder(value) -> str | None:
    return "must be a folder, not an existing file" if not value or Path(value).is_file() else None


# --------------------------------------------------------------------------------------------------
# Walking a config class: its settings, their flags
# --------------------------------------------------------------------------------------------------


def _nested(cls) -> dict[str, type]:
    """The fields of cls whose type is itself a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _walk(cls, prefix: str = "", path: tuple[str, ...] = (), omit: tuple[str, ...] = ()):
    """(flag, field, path to the field) for every setting of cls, nested configs' included."""
    nested_types = _nested(cls)
    for f in dataclasses.fields(cls):
        if f.name in omit:
            continue
        if f.name in nested_types:
            yield from _walk(nested_types[f.name], prefix + f.metadata.get("flags", ""), path + (f.name,),
                             f.metadata.get("omit", ()))
        elif _settable(f):
            name = f.metadata["flag"] if isinstance(f.metadata.get("flag"), str) else f.name
            yield "--" + (prefix + name).replace("_", "-"), f, path + (f.name,)


def _settable(f: dataclasses.Field) -> bool:
    """Whether a (not nested) field is a setting: it has a flag, and a type a flag can give."""
    return f.metadata.get("flag", True) is not False and (_switch(f) or _converter(f.type) is not None)


def _switch(f: dataclasses.Field) -> bool:
    """Whether a field's flag is a switch (--pack / --no-pack): a bool, or a bool that may be left unset."""
    return f.type in ("bool", "bool | None")


def _converter(annotation: str):
    """How a flag's text becomes the field's value (bool fields are switches); None for a type no flag
    can give (a dict)."""
    base = annotation.replace(" | None", "")
    if base.startswith("tuple"):  # empty items are kept, for the field's rule to refuse: `--tasks ,` names no task
        return lambda text: tuple(text.split(","))
    return {"int": int, "float": float, "str": str}.get(base)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def flag_names(cls) -> dict[tuple[str, ...], str]:
    """The flag of every setting of cls, keyed by the field's path ({("lora", "rank"): "--lora-rank", ...})."""
    return {path: flag for flag, _, path in _walk(cls)}


def settings(cls) -> list[str]:
    """The settings of cls (fields with a flag, nested ones included), as dotted names: "lora.rank"."""
    return [".".join(path) for _, _, path in _walk(cls)]


# --------------------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per setting of cls (int, float, str, bool, tuple, optional ones), nested configs' included
    (flat, with their prefixes), and --config FILE, a TOML file of settings the flags override."""
    parser.add_argument("--config", metavar="FILE", help="a TOML file of settings (configs/*.toml; keys are the "
                        "fields named by the flags below, nested configs are tables); flags given here override it")
    group = parser.add_argument_group(cls.__name__)
    default = cls()
    for flag, f, path in _walk(cls):
        kind = {"action": argparse.BooleanOptionalAction} if _switch(f) else {"type": _converter(f.type)}
        text = f"{f.metadata.get('help', '')} (default: {value_at(default, path)})"
        group.add_argument(flag, dest=_dest(flag), default=argparse.SUPPRESS, **kind,
                           help=text.replace("%", "%%"))  # argparse formats help text: "30%" is no placeholder


def given_flags(args: argparse.Namespace, cls) -> dict:
    """The settings of cls given as flags on the command line, as a nested dict ({"model": {"d_model": 256}, ...})."""
    given: dict = {}
    values = vars(args)
    for flag, _, path in _walk(cls):
        if _dest(flag) in values:
            _put(given, path, values[_dest(flag)])
    return given


def _put(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def build_config(cls, values: dict, base=None):
    """cls built from a nested dict of values on top of base (default: cls()); nested configs are merged
    field by field, lists become tuples where the field is a tuple, keys cls does not have are refused."""
    base = cls() if base is None else base
    nested_types = _nested(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    changes = {}
    for name, value in values.items():
        if name in nested_types:
            value = build_config(nested_types[name], value, getattr(base, name))
        elif isinstance(value, list) and known[name].type.startswith("tuple"):
            value = tuple(value)
        changes[name] = value
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def value_at(config, path: tuple[str, ...] | str):
    """The value of a field of config, by path ("lora.rank" or ("lora", "rank"))."""
    for name in (path.split(".") if isinstance(path, str) else path):
        config = getattr(config, name)
    return config


def changed(config, name: str) -> bool:
    """Whether a field of config ("lora.rank") differs from its default."""
    return value_at(config, name) != value_at(type(config)(), name)


def shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def setting(flag: str, value) -> str:
    """A setting as it is written on the command line: `--lr 0.1`, `--augment`, `--no-augment`."""
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {shown(value)}"


def ignored(config, flag: Callable[[str], str], names, reason: str) -> list[str]:
    """One problem for each of the fields names of config that is set away from its default, while the
    run would ignore it: `--colour-maps 8: applies to the pair layout only (this run: --layout in_context)`."""
    return [f"{setting(flag(name), value_at(config, name))}: {reason}" for name in names if changed(config, name)]


def _configs(config, path: tuple[str, ...] = ()):
    """(path, config) for every config nested in config, innermost first, then config itself."""
    for name in _nested(type(config)):
        yield from _configs(getattr(config, name), path + (name,))
    yield path, config


def _all_problems(config, name: Callable[[tuple[str, ...]], str] | None = None, unchecked: tuple[str, ...] = (),
                  relations: bool = True) -> list[str]:
    """What is wrong with config: each setting its rule refuses (in field order; not those whose dotted path
    is in unchecked), then what each config's `problems` method finds (the nested configs' first; only with
    relations). Settings are named by name(path): by default their flag (a field without one by its path)."""
    if name is None:
        flags = flag_names(type(config))
        name = lambda path: flags.get(path, ".".join(path))  # noqa: E731
    found = []
    for path, f in _checked_fields(type(config)):
        value = value_at(config, path)
        if ".".join(path) not in unchecked and (allowed := f.metadata["check"](value)) is not None:
            found.append(f"{name(path)} {_brief(shown(value))}: {allowed}")
    for path, part in _configs(config) if relations else ():
        if hasattr(part, "problems"):
            found += part.problems(_names_below(name, path))
    return found


def _brief(text: str, limit: int = 60) -> str:
    """A value as a message shows it: a crafted file's megabyte of text stays out of the one line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names_below(name: Callable[[tuple[str, ...]], str], path: tuple[str, ...]) -> Callable[[str], str]:
    """flag(name) for the config nested at path: the name of its field ("lora.rank") as spelled at the top
    (--ttt-rank in evaluate.py; ttt.lora.rank in a saved file)."""
    return lambda field: name((*path, *field.split(".")))


def _checked_fields(cls, path: tuple[str, ...] = ()):
    """(path, field) for every field of cls (nested ones included) that declares a rule."""
    nested_types = _nested(cls)
    for f in dataclasses.fields(cls):
        if f.name in nested_types:
            yield from _checked_fields(nested_types[f.name], path + (f.name,))
        elif f.metadata.get("check") is not None:
            yield path + (f.name,), f


def validate(config) -> None:
    """Raise ConfigError naming every setting of config whose value cannot work, all in one message."""
    if found := _all_problems(config):
        raise ConfigError("; ".join(found))


def config_problems(config, name: Callable[[tuple[str, ...]], str]) -> list[str]:
    """What validate would refuse in config (every rule, every relation), each setting named by
    name(path) rather than by its flag: a config that came from a file, say (arc.model.schema)."""
    return _all_problems(config, name)


def _frozen(cls, path: tuple[str, ...]) -> bool:
    """Whether the field at path, or a config it is nested in, is declared frozen."""
    for name in path:
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if f.metadata.get("frozen"):
            return True
        cls = _nested(cls).get(name)
    return False


def _differences(old, new, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple]:
    if dataclasses.is_dataclass(old):
        found = {}
        for f in dataclasses.fields(old):
            found.update(_differences(getattr(old, f.name), getattr(new, f.name), path + (f.name,)))
        return found
    return {} if old == new else {path: (old, new)}


def changed_settings(old, new) -> tuple[list[str], dict[str, list]]:
    """How config new differs from old (of the same class): the changes of frozen fields, each written
    `--flag old -> new`, and the other changes as {flag: [old, new]}."""
    flags = flag_names(type(old))
    refused, allowed = [], {}
    for path, (was, now) in _differences(old, new).items():
        flag = flags.get(path, ".".join(path))
        if _frozen(type(old), path):
            refused.append(f"{flag} {shown(was)} -> {shown(now)}")
        else:
            allowed[flag] = [was, now]
    return refused, allowed


# --------------------------------------------------------------------------------------------------
# Saved configs: a section of a checkpoint's config.json
# --------------------------------------------------------------------------------------------------


def saved_problems(cls, values, at: tuple[str, ...] = (), unchecked: tuple[str, ...] = (),
                   relations: bool = True) -> list[str]:
    """What is wrong with a config section a program saved for cls (a checkpoint's config.json, which a
    person or a crash may have changed since): not an object, keys cls has no field for, values not of
    their field's type (null only where the field may be None); then, on the config they build, each
    field's rule (but those whose path is in unchecked) and, with relations, each config's problems.
    Each problem names its key by path, starting at `at`: `model.d_model -32: must be an integer >= 1`.
    The same rules as the flags', so a checkpoint can say nothing that the command line could not."""
    found: list[str] = []
    _saved_types(cls, values, at, found)
    if found:
        return found  # the rules and relations below assume the types
    return _all_problems(build_config(cls, values), lambda path: ".".join(at + path), unchecked, relations)


def _saved_types(cls, values, at: tuple[str, ...], found: list[str]) -> None:
    if not isinstance(values, dict):
        found.append(f"{'.'.join(at) or 'the config'}: must be an object, not {_brief(_toml(values))}")
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    nested_types = _nested(cls)
    for name, value in values.items():
        key = ".".join(at + (name,))
        if name not in fields:
            found.append(f"{_brief(key)}: unknown field")
        elif name in nested_types:
            _saved_types(nested_types[name], value, at + (name,), found)
        elif (wrong := _json_type(value, fields[name].type)) is not None:
            found.append(f"{key} {_brief(_toml(value))}: {wrong}")


def _json_type(value, annotation: str) -> str | None:
    """What the field's type needs, when a JSON value is not of it (None: it is)."""
    if value is None:
        return None if annotation.endswith("| None") else "must not be null"
    if annotation.replace(" | None", "") == "dict":
        return None if isinstance(value, dict) else "must be an object"
    return _typed(value, annotation)[1]


# --------------------------------------------------------------------------------------------------
# TOML config files
# --------------------------------------------------------------------------------------------------


MAX_CONFIG_FILE_BYTES = 1 << 20  # a --config file: configs/*.toml hold about 1 KB each


def load_config_file(path: str | Path, cls, flags: dict | None = None) -> dict:
    """The settings a TOML file gives a cls, as a nested dict like given_flags', with flags (given_flags)
    on top. The file is read as every user file is (arc.infra.files.read_toml: a regular file of at most
    MAX_CONFIG_FILE_BYTES, UTF-8, TOML, not absurdly nested); unknown keys, wrong types and values their rule
    refuses are one ConfigError naming the file and each key; a value a flag replaces is not checked
    (--config FILE --init PATH replaces a placeholder)."""
    try:
        document = read_toml(path, MAX_CONFIG_FILE_BYTES)  # a regular file (no /dev/zero, no FIFO), capped
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:  # not a regular file, too large, not UTF-8, not TOML, nested too deeply
        raise ConfigError(f"{path}: {' '.join(str(error).split())}") from None
    found: list[str] = []
    values = _read_table(document, cls, (), (), found)
    flags = flags or {}
    by_path = {p: f for _, f, p in _walk(cls)}
    for key, value in _leaves(values):
        check = by_path[key].metadata.get("check")
        if not _has(flags, key) and check is not None and (allowed := check(value)) is not None:
            found.append(f"{'.'.join(key)} = {_toml(value)}: {allowed}")
    if found:
        raise ConfigError(f"{path}: {'; '.join(found)}")
    return _merged(values, flags)


def _read_table(table: dict, cls, path: tuple[str, ...], omit: tuple[str, ...], found: list[str]) -> dict:
    """The values of one TOML table for the config cls, typed as cls's fields; problems appended to found."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in omit}
    nested_types = _nested(cls)
    settable = {f.name for f in fields.values() if f.name in nested_types or _settable(f)}
    values = {}
    for name, value in table.items():
        key = ".".join(path + (name,))
        if name not in settable:
            # a key of a nested config's table written at this level (a file from before that config existed)
            moved = [(table, name) for table, kind in nested_types.items() if name in settings(kind)]
            near = moved or [(n,) for n in difflib.get_close_matches(name, settable, n=1)]
            found.append(f"{key}: unknown key" + (f" (did you mean {'.'.join(path + near[0])}?)" if near else ""))
        elif name in nested_types:
            if not isinstance(value, dict):
                found.append(f"{key} = {_toml(value)}: must be a table ([{key}])")
            else:
                omit = fields[name].metadata.get("omit", ())
                values[name] = _read_table(value, nested_types[name], path + (name,), omit, found)
        else:
            typed, wrong = _typed(value, fields[name].type)
            if wrong:
                found.append(f"{key} = {_toml(value)}: {wrong}")
            else:
                values[name] = typed
    return values


def _typed(value, annotation: str) -> tuple[object, str | None]:
    """value (as TOML gives it) as the field's type, or what the type needs. TOML has no null: a field
    whose default is None is left out of a file to keep it unset."""
    base = annotation.replace(" | None", "")
    if base == "bool":
        return value, None if isinstance(value, bool) else "must be true or false"
    if base == "int":
        return value, None if type(value) is int else "must be an integer"
    if base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value) if ok else value), None if ok else "must be a number"
    if base == "str":
        return value, None if isinstance(value, str) else "must be a string"
    if base.startswith("tuple"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (tuple(value) if ok else value), None if ok else "must be a list of strings"
    return value, f"cannot be set from a file ({annotation})"


def _toml(value) -> str:
    """A value as TOML writes it, for messages: "pair", 16, true, ["wq", "wv"]."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _leaves(tree: dict, path: tuple[str, ...] = ()):
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, path + (name,))
        else:
            yield path + (name,), value


def _has(tree: dict, path: tuple[str, ...]) -> bool:
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return False
        tree = tree[name]
    return True


def _merged(base: dict, top: dict) -> dict:
    """base with top's values over it, nested tables merged key by key."""
    merged = dict(base)
    for name, value in top.items():
        merged[name] = _merged(merged.get(name, {}), value) if isinstance(value, dict) else value
    return merged
