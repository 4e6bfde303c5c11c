"""Known answers for arc.tokenizer: the exact ids and loss mask of a small example, parsing, fitting."""
import numpy as np
import pytest
from tokenizers import Tokenizer

from arc.data import Example, Pair, load_tasks
from arc.tokenizer import BEGIN, END, INPUT, OUTPUT, ROW, GridTokenizer, grid_length


def g(rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def example(demos, test_in, test_out=None) -> Example:
    return Example("task", 0, [Pair(g(i), g(o)) for i, o in demos], Pair(g(test_in), None if test_out is None else g(test_out)))


# one demonstration [[1,2]] -> [[3],[4]], test [[5]] -> [[6,7]]
SMALL = example([([[1, 2]], [[3], [4]])], [[5]], [[6, 7]])
# B  I  1  2  \n O  3  \n 4  \n E  I  5  \n O  |  6  7  \n E
SMALL_IDS = [13, 11, 1, 2, 10, 12, 3, 10, 4, 10, 14, 11, 5, 10, 12, 6, 7, 10, 14]
SMALL_MASK = [False] * 15 + [True] * 4  # only the test output's rows and its E
SMALL_TEXT = "BI12\nO3\n4\nEI5\nO67\nE"


@pytest.fixture(scope="module")
def tok() -> GridTokenizer:
    return GridTokenizer()


def test_special_ids():
    assert (ROW, INPUT, OUTPUT, BEGIN, END) == (10, 11, 12, 13, 14)


def test_encode_example_known_ids_and_mask(tok):
    row = tok.encode_example(SMALL)
    assert row.ids.dtype == np.int64 and row.loss_mask.dtype == bool
    assert row.ids.tolist() == SMALL_IDS
    assert row.loss_mask.tolist() == SMALL_MASK


def test_encode_prompt_is_the_prefix_ending_at_the_test_output_marker(tok):
    prompt = tok.encode_prompt(SMALL)
    assert prompt == SMALL_IDS[:15]
    assert prompt[-1] == OUTPUT
    # prediction: no answer needed
    assert tok.encode_prompt(example([([[1, 2]], [[3], [4]])], [[5]])) == SMALL_IDS[:15]


def test_encode_example_without_test_output_raises(tok):
    with pytest.raises(ValueError, match="no output"):
        tok.encode_example(example([([[1]], [[2]])], [[3]]))


def test_decode_text_round_trip(tok):
    assert tok.decode_text(SMALL_IDS) == SMALL_TEXT
    assert tok.encode_text(SMALL_TEXT) == SMALL_IDS
    assert tok.decode_text(np.array(SMALL_IDS)) == SMALL_TEXT


def test_saved_tokenizer_json_loads_with_tokenizers_library(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    plain = Tokenizer.from_file(str(path))
    assert plain.encode(SMALL_TEXT).ids == SMALL_IDS
    assert plain.get_vocab_size() == 16
    assert GridTokenizer.load(str(path)).encode_example(SMALL).ids.tolist() == SMALL_IDS


def test_wrong_vocabulary_is_refused():
    from tokenizers import models
    with pytest.raises(ValueError, match="not the grid vocabulary"):
        GridTokenizer(Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")))


def test_parse_grid_valid(tok):
    grid, why = tok.parse_grid([1, 2, ROW, 3, 4, ROW, END, 7, 7])  # anything after E is ignored
    assert why == "ok"
    assert grid.dtype == np.uint8
    assert grid.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    "ids, reason",
    [
        ([1, 2, ROW], "no end token (hit the length limit)"),
        ([1, 2, ROW, 3, ROW, END], "ragged rows (widths [1, 2])"),
        ([1, 2, ROW, 3, 4, END], "last row is not terminated"),
        ([END], "empty output"),
        ([1, INPUT, ROW, END], "unexpected token 'I' inside the grid"),
        ([1, OUTPUT, ROW, END], "unexpected token 'O' inside the grid"),
        ([1, ROW, ROW, END], "empty row"),
        ([1, ROW] * 31 + [END], "grid 31x1 exceeds 30x30"),
    ],
    ids=["no-end", "ragged", "unterminated", "empty", "marker-I", "marker-O", "empty-row", "too-tall"],
)
def test_parse_grid_invalid(tok, ids, reason):
    assert tok.parse_grid(ids) == (None, reason)


# three demonstrations of 1x1 grids: [[1]]->[[2]], [[3]]->[[4]], [[5]]->[[6]]; test [[7]]->[[8]]
# B | I 1 \n O 2 \n E | I 3 \n O 4 \n E | I 5 \n O 6 \n E | I 7 \n O 8 \n E
#  0  1 2  3 4 5  6 7   8 9 10 11 12 13 14 ...
THREE = example([([[1]], [[2]]), ([[3]], [[4]]), ([[5]], [[6]])], [[7]], [[8]])


def test_train_on_demo_outputs_masks_later_demo_outputs_not_the_first(tok):
    default = tok.encode_example(THREE)
    with_demos = tok.encode_example(THREE, train_on_demo_outputs=True)
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
def test_fit_drops_longest_demonstrations_first(tok, max_len, kept):
    fitted = tok.fit(SIZED, max_len)
    if kept is None:
        assert fitted is None  # even one demonstration is too long
        return
    assert [p.input.tolist() for p in fitted.train] == [i for i, _ in kept]
    assert fitted.test is SIZED.test
    assert len(tok.encode_example(fitted).ids) <= max_len


def test_fit_none_when_the_only_demonstration_is_too_long(tok):
    ex = example([B], [[7]], [[8]])  # 1 + 27 + 4 + 3 = 35 tokens
    assert tok.fit(ex, 35) is not None
    assert tok.fit(ex, 34) is None


def test_fit_answer_budget_without_known_output(tok):
    unknown = example([A, B, C], [[7]])
    assert tok.answer_budget(unknown) == grid_length(np.zeros((3, 3))) + 1  # the largest demo output + E
    assert tok.answer_budget(SIZED) == 3  # the true answer [[8]]: "8\n" + E
    # with a 13-token answer budget the 57-token example needs 67: B must go
    assert [p.input.tolist() for p in tok.fit(unknown, 66).train] == [A[0], C[0]]
    assert [p.input.tolist() for p in tok.fit(SIZED, 20, answer_tokens=3).train] == [A[0]]


@pytest.mark.parametrize("seed", range(5))
def test_example_length_equals_encoded_length(tok, seed):
    rng = np.random.default_rng(seed)

    def grid():
        h, w = rng.integers(1, 6, size=2)
        return rng.integers(0, 10, size=(h, w)).tolist()

    ex = example([(grid(), grid()) for _ in range(int(rng.integers(1, 4)))], grid(), grid())
    answer = grid_length(ex.test.output) + 1
    assert tok.example_length(ex, answer) == len(tok.encode_example(ex).ids)
    assert tok.example_length(ex, 0) == len(tok.encode_prompt(ex))


def _pair(h_in, w_in, h_out, w_out):
    return Pair(np.zeros((h_in, w_in), dtype=np.uint8), np.zeros((h_out, w_out), dtype=np.uint8))


def test_answer_limit_known_answers():
    tok = GridTokenizer()
    doubling = [_pair(2, 2, 4, 4), _pair(1, 3, 2, 6)]  # every output is its input scaled by 2
    ex = Example("t", 0, doubling, Pair(np.zeros((3, 3), dtype=np.uint8)))
    assert tok.answer_limit(ex, slack=1) == 6 * 7 + 1  # 6x6 (the scaled test input) plus row ends and E
    assert tok.answer_limit(ex, slack=2) == 2 * 43
    assert tok.answer_limit(ex, slack=0) == 30 * 31 + 1  # no limit but 30x30
    fixed = [_pair(5, 5, 2, 2), _pair(9, 9, 3, 1)]  # outputs unrelated to the input size: the ratios still bound it
    small = Example("t", 0, fixed, Pair(np.zeros((1, 1), dtype=np.uint8)))
    assert tok.answer_limit(small, slack=1) == 3 * (2 + 1) + 1  # the largest demonstration sides: 3 rows, 2 columns
    big = Example("t", 0, doubling, Pair(np.zeros((20, 20), dtype=np.uint8)))
    assert tok.answer_limit(big, slack=1) == 30 * 31 + 1  # 40x40 capped at 30x30


@pytest.mark.parametrize("split", ["training", "evaluation"])
def test_answer_limit_never_cuts_an_arc1_answer(split):
    tok = GridTokenizer()
    for task in load_tasks("arc1", split):
        for ex in task.examples():
            assert grid_length(ex.test.output) + 1 <= tok.answer_limit(ex.hidden(), slack=2), ex.task_id
