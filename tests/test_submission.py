"""arc.inference.submission: entries, format validation (each error names the task), atomic writing."""
import json

import pytest
from conftest import g

from arc.data.tasks import Pair, Task
from arc.inference.submission import (
    build_submission,
    submission_entry,
    validate_submission,
    write_submission,
)



def task(task_id: str, outputs: list) -> Task:
    return Task(task_id, [Pair(g([[1]]), g([[2]]))],
                [Pair(g([[i]]), None if o is None else g(o)) for i, o in enumerate(outputs)])


TASKS = [task("two", [[[5, 6]], [[7], [8]]]), task("one", [[[3]]])]


def good() -> dict:
    return build_submission({
        "two": [[g([[5, 6]]), g([[0]])], [g([[1]]), g([[7], [8]])]],  # test 1 answered by attempt_2
        "one": [[g([[3]])]],
    })


def test_entries_and_build():
    assert submission_entry([g([[1, 2]]), g([[3]]), g([[4]])]) == {"attempt_1": [[1, 2]], "attempt_2": [[3]]}
    assert submission_entry([g([[1]])]) == {"attempt_1": [[1]], "attempt_2": [[1]]}
    assert submission_entry([]) == {"attempt_1": [[0]], "attempt_2": [[0]]}
    sub = good()
    assert list(sub) == ["two", "one"] and len(sub["two"]) == 2
    assert type(sub["one"][0]["attempt_1"][0][0]) is int  # plain ints: json can write them
    validate_submission(sub)
    validate_submission(sub, TASKS)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.__setitem__("two", {"attempt_1": [[1]]}), "task 'two'"),
    (lambda s: s.__setitem__("two", []), "task 'two'"),
    (lambda s: s["two"].__setitem__(1, [[1]]), "task 'two': test 1"),
    (lambda s: s["two"][1].pop("attempt_2"), "task 'two': test 1: missing 'attempt_2'"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [[1, 2], [3]]), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [[10]]), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [[True]]), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [[1.0]]), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", []), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [[]]), "task 'two': test 0: attempt_1"),
    (lambda s: s["two"][0].__setitem__("attempt_1", [1, 2]), "task 'two': test 0: attempt_1"),
    (lambda s: s["one"][0].__setitem__("attempt_2", [[0] * 31]), "task 'one': test 0: attempt_2"),
    (lambda s: s["one"][0].__setitem__("attempt_2", [[0]] * 31), "task 'one': test 0: attempt_2"),
])
def test_format_errors_name_the_task(mutate, message):
    sub = good()
    mutate(sub)
    with pytest.raises(ValueError, match=message):
        validate_submission(sub)


def test_errors_against_tasks():
    with pytest.raises(ValueError, match="submission: expected an object"):
        validate_submission([])
    sub = good()
    sub["two"].pop()
    with pytest.raises(ValueError, match="task 'two': has 1 entries, expected 2"):
        validate_submission(sub, TASKS)
    sub = good()
    del sub["one"]
    with pytest.raises(ValueError, match="task 'one': missing"):
        validate_submission(sub, TASKS)
    with pytest.raises(ValueError, match="task 'extra'"):
        validate_submission({**good(), "extra": [submission_entry([])]}, TASKS)


def test_write_round_trip(tmp_path):
    path = write_submission(tmp_path / "out" / "submission.json", good())
    assert json.loads(path.read_text()) == good()
    assert [p.name for p in path.parent.iterdir()] == ["submission.json"]  # no temporary file left
    with pytest.raises(ValueError):
        write_submission(tmp_path / "bad.json", {"x": []})
    assert not (tmp_path / "bad.json").exists()
