"""Known answers for arc.layouts.rows, in-context layout: the exact ids and loss mask of a small example,
fitting into the context, answer budgets and limits."""
import time

import numpy as np
import pytest
from conftest import g

from arc.data.tasks import Example, Pair, load_tasks
from arc.data.tokenizer import OUTPUT, GridTokenizer, grid_length
from arc.layouts.in_context import InContextLayout
from arc.layouts.rows import answer_budget, answer_limit



def example(demos, test_in, test_out=None) -> Example:
    return Example("task", 0, [Pair(g(i), g(o)) for i, o in demos], Pair(g(test_in), None if test_out is None else g(test_out)))


# one demonstration [[1,2]] -> [[3],[4]], test [[5]] -> [[6,7]]
SMALL = example([([[1, 2]], [[3], [4]])], [[5]], [[6, 7]])
# B  I  1  2  \n O  3  \n 4  \n E  I  5  \n O  |  6  7  \n E
SMALL_IDS = [13, 11, 1, 2, 10, 12, 3, 10, 4, 10, 14, 11, 5, 10, 12, 6, 7, 10, 14]
SMALL_MASK = [False] * 15 + [True] * 4  # only the test output's rows and its E
SMALL_TEXT = "BI12\nO3\n4\nEI5\nO67\nE"

@pytest.fixture(scope="module")
def rows() -> InContextLayout:
    return InContextLayout(GridTokenizer())


def test_encode_example_known_ids_and_mask(rows):
    row = rows.encode(SMALL)
    assert row.ids.dtype == np.int64 and row.loss_mask.dtype == bool
    assert row.ids.tolist() == SMALL_IDS
    assert row.loss_mask.tolist() == SMALL_MASK


def test_encode_prompt_is_the_prefix_ending_at_the_test_output_marker(rows):
    prompt = rows.prompt(SMALL)
    assert prompt.ids.tolist() == SMALL_IDS[:15] and not prompt.loss_mask.any()
    assert prompt.ids[-1] == OUTPUT
    # prediction: no answer needed
    assert rows.prompt(example([([[1, 2]], [[3], [4]])], [[5]])).ids.tolist() == SMALL_IDS[:15]


def test_encode_example_without_test_output_raises(rows):
    with pytest.raises(ValueError, match="no output"):
        rows.encode(example([([[1]], [[2]])], [[3]]))


# three demonstrations of 1x1 grids: [[1]]->[[2]], [[3]]->[[4]], [[5]]->[[6]]; test [[7]]->[[8]]
# B | I 1 \n O 2 \n E | I 3 \n O 4 \n E | I 5 \n O 6 \n E | I 7 \n O 8 \n E
#  0  1 2  3 4 5  6 7   8 9 10 11 12 13 14 ...
THREE = example([([[1]], [[2]]), ([[3]], [[4]]), ([[5]], [[6]])], [[7]], [[8]])


def test_train_on_demo_outputs_masks_later_demo_outputs_not_the_first(rows):
    default = rows.encode(THREE)
    with_demos = rows.encode(THREE, train=True)
    assert default.ids.tolist() == with_demos.ids.tolist()
    assert len(default.ids) == 29
    assert np.flatnonzero(default.loss_mask).tolist() == [26, 27, 28]
    # demo 1's output (5, 6, 7) is not trained on; demos 2 and 3 are, with their E
    assert np.flatnonzero(with_demos.loss_mask).tolist() == [12, 13, 14, 19, 20, 21, 26, 27, 28]
    assert default.ids[[12, 19, 26]].tolist() == [4, 6, 8]


# demonstrations of different sizes: A 1x1 (7 tokens with I, O, E), B 3x3 (27), C 2x2 (15);
# test 1x1 -> 1x1: B + demos + I test O + answer = 1 + 49 + 4 + 3 = 57 tokens
A, B, C = ([[1]], [[2]]), ([[3] * 3] * 3, [[4] * 3] * 3), ([[5] * 2] * 2, [[6] * 2] * 2)
SIZED = example([A, B, C], [[7]], [[8]])


@pytest.mark.parametrize(
    "max_len, kept",
    [(100, [A, B, C]), (57, [A, B, C]), (56, [A, C]), (30, [A, C]), (29, [A]), (15, [A]), (14, None)],
)
def test_fit_drops_longest_demonstrations_first(rows, max_len, kept):
    fitted = rows.fit(SIZED, max_len)
    if kept is None:
        assert fitted is None  # even one demonstration is too long
        return
    assert [p.input.tolist() for p in fitted.train] == [i for i, _ in kept]
    assert fitted.test is SIZED.test
    assert len(rows.encode(fitted).ids) <= max_len


def test_fit_a_task_of_twenty_thousand_demonstrations_in_one_pass(rows):
    """Alternating 1x1 (7 tokens) and 3x3 (27 tokens) demonstrations: every 3x3 one goes, then the first
    1x1 ones, leaving the last three (1 + 3 * 7 + 4 + 3 = 29 tokens). One sort, not one rescan of all
    demonstrations per dropped one (which took minutes on a 50 MB task)."""
    demos = [A if i % 2 == 0 else B for i in range(20_000)]
    big = example(demos, [[7]], [[8]])
    started = time.perf_counter()
    fitted = rows.fit(big, 29)
    assert time.perf_counter() - started < 5
    assert [p.input.tolist() for p in fitted.train] == [A[0]] * 3
    assert [p is big.train[i] for p, i in zip(fitted.train, (19_994, 19_996, 19_998))] == [True] * 3


def test_fit_none_when_the_only_demonstration_is_too_long(rows):
    ex = example([B], [[7]], [[8]])  # 1 + 27 + 4 + 3 = 35 tokens
    assert rows.fit(ex, 35) is not None
    assert rows.fit(ex, 34) is None


def test_fit_answer_budget_without_known_output(rows):
    unknown = example([A, B, C], [[7]])
    assert answer_budget(unknown) == grid_length(np.zeros((3, 3))) + 1  # the largest demo output + E
    assert answer_budget(SIZED) == 3  # the true answer [[8]]: "8\n" + E
    # with a 13-token answer budget the 57-token example needs 67: B must go
    assert [p.input.tolist() for p in rows.fit(unknown, 66).train] == [A[0], C[0]]
    assert [p.input.tolist() for p in rows.fit(SIZED, 20, answer_tokens=3).train] == [A[0]]


@pytest.mark.parametrize("seed", range(5))
def test_example_length_equals_encoded_length(rows, seed):
    rng = np.random.default_rng(seed)

    def grid():
        h, w = rng.integers(1, 6, size=2)
        return rng.integers(0, 10, size=(h, w)).tolist()

    ex = example([(grid(), grid()) for _ in range(int(rng.integers(1, 4)))], grid(), grid())
    answer = grid_length(ex.test.output) + 1
    assert rows.length(ex, answer) == len(rows.encode(ex).ids)
    assert rows.length(ex, 0) == len(rows.prompt(ex).ids)


def _pair(h_in, w_in, h_out, w_out):
    return Pair(np.zeros((h_in, w_in), dtype=np.uint8), np.zeros((h_out, w_out), dtype=np.uint8))


def test_answer_limit_known_answers():
    doubling = [_pair(2, 2, 4, 4), _pair(1, 3, 2, 6)]  # every output is its input scaled by 2
    ex = Example("t", 0, doubling, Pair(np.zeros((3, 3), dtype=np.uint8)))
    assert answer_limit(ex, slack=1) == 6 * 7 + 1  # 6x6 (the scaled test input) plus row ends and E
    assert answer_limit(ex, slack=2) == 2 * 43
    assert answer_limit(ex, slack=0) == 30 * 31 + 1  # no limit but 30x30
    fixed = [_pair(5, 5, 2, 2), _pair(9, 9, 3, 1)]  # outputs unrelated to the input size: the ratios still bound it
    small = Example("t", 0, fixed, Pair(np.zeros((1, 1), dtype=np.uint8)))
    assert answer_limit(small, slack=1) == 3 * (2 + 1) + 1  # the largest demonstration sides: 3 rows, 2 columns
    big = Example("t", 0, doubling, Pair(np.zeros((20, 20), dtype=np.uint8)))
    assert answer_limit(big, slack=1) == 30 * 31 + 1  # 40x40 capped at 30x30


@pytest.mark.parametrize("split", ["training", "evaluation"])
def test_answer_limit_never_cuts_an_arc1_answer(split):
    for task in load_tasks("arc1", split):
        for ex in task.examples():
            assert grid_length(ex.test.output) + 1 <= answer_limit(ex.hidden(), slack=2), ex.task_id
