"""Known answers for arc.data.tokenizer: the vocabulary, the saved tokenizer, parsing generated outputs."""
import numpy as np
import pytest
from tokenizers import Tokenizer

from arc.data.tokenizer import BEGIN, END, INPUT, OUTPUT, ROW, GridTokenizer

# the in-context row of a one-demonstration task (tests/test_rows.py builds it from grids)
SMALL_IDS = [13, 11, 1, 2, 10, 12, 3, 10, 4, 10, 14, 11, 5, 10, 12, 6, 7, 10, 14]
SMALL_TEXT = "BI12\nO3\n4\nEI5\nO67\nE"


@pytest.fixture(scope="module")
def tok() -> GridTokenizer:
    return GridTokenizer()


def test_special_ids():
    assert (ROW, INPUT, OUTPUT, BEGIN, END) == (10, 11, 12, 13, 14)


def test_saved_tokenizer_json_loads_with_tokenizers_library(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    plain = Tokenizer.from_file(str(path))
    assert plain.encode(SMALL_TEXT).ids == SMALL_IDS
    assert plain.get_vocab_size() == 16
    assert GridTokenizer.load(str(path)).encode_text(SMALL_TEXT) == SMALL_IDS


def test_wrong_vocabulary_is_refused():
    from tokenizers import models
    with pytest.raises(ValueError, match="not the grid vocabulary"):
        GridTokenizer(Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")))


def test_parse_output_valid(tok):
    grid, why = tok.parse_output([1, 2, ROW, 3, 4, ROW, END, 7, 7])  # anything after E is ignored
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
def test_parse_output_invalid(tok, ids, reason):
    assert tok.parse_output(ids) == (None, reason)
