"""The prediction pipeline: views -> decode -> map back -> vote / product of experts -> attempts."""
import numpy as np
import pytest
import torch

from arc.data.augment import make_views
from arc.data.tasks import Example, Pair
from arc.data.tokenizer import END, OUTPUT, ROW, GridTokenizer
from arc.inference.config import DecodeConfig
from arc.inference.ensemble import candidate_nll, product_of_experts
from arc.layouts.in_context import InContextLayout
from conftest import TINY, bigram_model, g, predict



# background 0 stays fixed under every view (keep_background), so a model that always writes the
# 1x1 grid [[0]] gives the same grid in every view once mapped back: all views vote for it
EXAMPLE = Example("t", 0, [Pair(g([[1, 0]]), g([[0]])), Pair(g([[0, 2]]), g([[0]]))], Pair(g([[3, 0]]), g([[0]])))


@pytest.mark.parametrize("decode", ["greedy", "dfs", "sample"])
def test_every_view_votes_for_a_view_invariant_answer(decode, one_thread):
    model = bigram_model({OUTPUT: 0, 0: ROW, ROW: END})
    cfg = DecodeConfig(decode=decode, views=4, samples=2, dfs_threshold=0.5)
    [p] = predict(model, InContextLayout(GridTokenizer()), [EXAMPLE], TINY.max_seq_len, cfg)
    assert p.correct and p.candidates == 1 and p.votes == [4]
    assert [a.tolist() for a in p.attempts] == [[[0]]]


def test_votes_split_when_the_answer_is_not_mapped_back_consistently(one_thread):
    # always writing colour 5 means a different original colour under each colour permutation
    model = bigram_model({OUTPUT: 5, 5: ROW, ROW: END})
    views = make_views(len(EXAMPLE.train), 4, seed=0)
    [p] = predict(model, InContextLayout(GridTokenizer()), [EXAMPLE], TINY.max_seq_len, DecodeConfig(views=4))
    expected = {int(v.invert_grid(g([[5]]))[0, 0]) for v in views}
    assert p.candidates == len(expected) and len(p.attempts) == min(2, len(expected))
    assert sum(p.votes) <= 4 and p.votes == sorted(p.votes, reverse=True)
    assert p.attempts[0].tolist() == [[5]]  # ties are broken by first appearance: the identity view


def test_input_copies_are_dropped_while_any_other_candidate_remains(one_thread):
    """drop_input_copies (the default): writing 5 under 4 colour views gives 5 in the identity view (equal to the
    test input [[5]]: dropped) and other colours in the others; a model that only ever copies keeps its copy."""
    example = Example("t", 0, EXAMPLE.train, Pair(g([[5]]), g([[0]])))
    writes_5 = bigram_model({OUTPUT: 5, 5: ROW, ROW: END})
    [p] = predict(writes_5, InContextLayout(GridTokenizer()), [example], TINY.max_seq_len, DecodeConfig(views=4))
    assert p.attempts and all(a.tolist() != [[5]] for a in p.attempts)
    [kept] = predict(writes_5, InContextLayout(GridTokenizer()), [example], TINY.max_seq_len,
                     DecodeConfig(views=4, drop_input_copies=False))
    assert kept.attempts[0].tolist() == [[5]]
    copy = Example("t", 0, EXAMPLE.train, Pair(g([[0]]), g([[0]])))  # every view writes [[0]], the test input
    [only] = predict(bigram_model({OUTPUT: 0, 0: ROW, ROW: END}), InContextLayout(GridTokenizer()), [copy],
                     TINY.max_seq_len, DecodeConfig(views=4))
    assert only.correct and [a.tolist() for a in only.attempts] == [[[0]]]


def test_poe_attempts_are_the_lowest_summed_nll(one_thread):
    model = bigram_model({OUTPUT: 1, 1: ROW, 2: ROW, ROW: END})
    with torch.no_grad():
        model.head.weight[2, OUTPUT] = 10.0  # after 'O', colours 1 and 2 are equally likely
    cfg = DecodeConfig(decode="sample", samples=6, views=2, select="poe", score_views=3)
    [p] = predict(model, InContextLayout(GridTokenizer()), [EXAMPLE], TINY.max_seq_len, cfg)
    assert p.candidates >= 2
    assert set(p.attempts_by) == {"vote", "poe"} and p.attempts == p.attempts_by["poe"]
    # recompute the product-of-experts ranking directly from the candidates the pipeline scored
    pool = p.attempts_by["vote"] + [a for a in p.attempts_by["poe"]]
    views = make_views(len(EXAMPLE.train), 3, 7919)
    scores = product_of_experts(candidate_nll(model, InContextLayout(GridTokenizer()), EXAMPLE, pool, views, TINY.max_seq_len))
    best = pool[int(np.argmin(scores))]
    assert p.attempts[0].tolist() == best.tolist()


def test_too_long_examples_are_reported_not_decoded(tiny_model):
    [p] = predict(tiny_model, InContextLayout(GridTokenizer()), [EXAMPLE], 8, DecodeConfig(views=2))
    assert p.status == "too long for the context" and p.attempts == [] and p.correct is False


def test_unknown_strategy_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="unknown decode strategy"):
        predict(tiny_model, InContextLayout(GridTokenizer()), [EXAMPLE], TINY.max_seq_len, DecodeConfig(decode="beam"))


@pytest.mark.parametrize("keep_greedy", [True, False])
def test_dfs_is_seeded_with_the_greedy_output(keep_greedy, one_thread):
    """With a threshold of 1 no output can clear it (probability > 1), so DFS alone finds nothing;
    seeded with the greedy path, the greedy grid is still a candidate."""
    model = bigram_model({OUTPUT: 0, 0: ROW, ROW: END})
    cfg = DecodeConfig(decode="dfs", dfs_threshold=1.0, dfs_keep_greedy=keep_greedy)
    [p] = predict(model, InContextLayout(GridTokenizer()), [EXAMPLE], TINY.max_seq_len, cfg)
    if keep_greedy:
        assert p.candidates == 1 and [a.tolist() for a in p.attempts] == [[[0]]] and p.correct
    else:
        assert p.attempts == [] and p.status.startswith("no valid output")
