"""arc.inference.decode: batched greedy decoding with the cache == a naive loop; stopping at END and at each row's limit;
the compiled decode step's bookkeeping and its eager fallback."""
import os

import pytest
import torch
from conftest import bigram_model

from arc.data.tokenizer import END, OUTPUT, PAD, ROW
from arc.inference import decode
from arc.inference.decode import greedy_decode, left_pad
from arc.layouts.rows import token_row
from arc.model.kvcache import SPAN, KVCache
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def naive_greedy(model, prompt: list[int], max_new: int, end_id: int) -> tuple[list[int], float]:
    """Full forward over everything so far, argmax, append; and the smallest top-1/top-2 logit gap seen."""
    out, gap = [], float("inf")
    for _ in range(max_new):
        logits = model(torch.tensor([prompt + out]))[0, -1]
        top2 = logits.topk(2).values
        gap = min(gap, float(top2[0] - top2[1]))
        out.append(int(logits.argmax()))
        if out[-1] == end_id:
            break
    return out, gap


PROMPTS = [[13, 11, 1, 2, 10, 12], [13, 11, 3, 10, 4, 10, 12, 5, 10, 14, 11, 6, 10, 12], [13, 11, 7, 7, 10, 12, 9]]


def test_left_pad():
    tokens, pad = left_pad([[1, 2, 3], [4], [5, 6]], PAD)
    assert tokens.tolist() == [[1, 2, 3], [PAD, PAD, 4], [PAD, 5, 6]]
    assert pad.tolist() == [0, 2, 1]


@pytest.mark.parametrize("end_id", [END, -1])
def test_greedy_decode_equals_naive_loop(sharp_model, end_id):
    max_new = [12, 9, 15]
    got = greedy_decode(sharp_model, [token_row(p) for p in PROMPTS], max_new, end_id, PAD)
    for prompt, n, row in zip(PROMPTS, max_new, got):
        expected, gap = naive_greedy(sharp_model, prompt, n, end_id)
        assert gap > 1e-3  # the comparison is meaningful: no near-ties that float noise could flip
        assert row == expected
    if end_id == -1:  # no end token can be produced: every row runs to its own limit
        assert [len(r) for r in got] == max_new
    else:  # some rows stop early at E while the others keep going
        assert any(r[-1] == END and len(r) < n for r, n in zip(got, max_new))
        assert any(len(r) == n for r, n in zip(got, max_new))


def test_greedy_decode_single_prompt_equals_batched(sharp_model):
    batched = greedy_decode(sharp_model, [token_row(p) for p in PROMPTS], [10, 10, 10], -1, PAD)
    alone = [greedy_decode(sharp_model, [token_row(p)], [10], -1, PAD)[0] for p in PROMPTS]
    assert batched == alone
    assert len({tuple(r) for r in alone}) > 1  # the rows really differ


# the rigged model's greedy choice: O -> 1 -> 2 -> \n -> E -> 3 -> 3 -> ...; 5 -> 5 -> ...; 7 -> \n
CHAIN = {OUTPUT: 1, 1: 2, 2: ROW, ROW: END, END: 3, 7: ROW}


def test_rigged_model_follows_its_chain():
    model = bigram_model(CHAIN)
    tokens = torch.tensor([[OUTPUT, 1, 2, ROW, END, 3, 5, 7]])
    assert model(tokens)[0].argmax(-1).tolist() == [1, 2, ROW, END, 3, 3, 5, ROW]


def test_stops_right_after_end_token():
    model = bigram_model(CHAIN)
    got = greedy_decode(model, [token_row(p) for p in [[13, 11, 4, 10, OUTPUT], [13, 5], [13, 11, 2], [13, 7]]], [10, 6, 2, 1], END, PAD)
    assert got == [
        [1, 2, ROW, END],  # stops at E although 10 tokens were allowed
        [5, 5, 5, 5, 5, 5],  # never produces E: exactly its 6 tokens
        [ROW, END],  # E arrives exactly at the limit
        [ROW],  # limit 1
    ]


def test_each_row_gets_exactly_its_own_limit_without_end(sharp_model):
    limits = [3, 0, 7, 1]
    prompts = PROMPTS + [[13, 11, 1, 10, OUTPUT]]
    got = greedy_decode(sharp_model, [token_row(p) for p in prompts], limits, -1, PAD)
    assert [len(r) for r in got] == limits
    longest = greedy_decode(sharp_model, [token_row(p) for p in prompts], [7] * 4, -1, PAD)
    assert all(row == full[: len(row)] for row, full in zip(got, longest))  # a shorter limit is a prefix


def test_all_limits_zero_gives_empty_rows(sharp_model):
    assert greedy_decode(sharp_model, [token_row(p) for p in PROMPTS[:2]], [0, 0], END, PAD) == [[], []]


def test_decode_step_path_equals_eager(sharp_model, monkeypatch):
    """greedy_decode with compile=True drives model.decode_step (slot as a tensor, advanced by the loop);
    with the eager decode_step standing in for the compiled one, no compile is needed to check it."""
    monkeypatch.setattr(decode, "_compiled", Transformer.decode_step)
    prompts, limits = PROMPTS + [[13, 11, 1, 10, OUTPUT]], [12, 9, 15, 4]
    for end_id in (END, -1):
        assert greedy_decode(sharp_model, [token_row(p) for p in prompts], limits, end_id, PAD, compile=True) == \
            greedy_decode(sharp_model, [token_row(p) for p in prompts], limits, end_id, PAD, compile=False)


def test_compile_failure_falls_back_to_eager(sharp_model, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(decode, "_compiled", broken)
    got = greedy_decode(sharp_model, [token_row(p) for p in PROMPTS], [10, 10, 10], -1, PAD, compile=True)
    assert got == greedy_decode(sharp_model, [token_row(p) for p in PROMPTS], [10, 10, 10], -1, PAD, compile=False)
    assert decode._compiled is False  # not tried again
    assert "decoding eagerly" in capsys.readouterr().out


@pytest.mark.skipif(os.environ.get("ARC_TEST_COMPILE") != "1", reason="compiles (~30-60 s): set ARC_TEST_COMPILE=1")
def test_compiled_greedy_decode_equals_eager(sharp_model):
    prompts, limits = PROMPTS + [[13, 11, 1, 10, OUTPUT]], [12, 9, 15, 4]
    for batch in (prompts[:1], prompts):  # batch 1 and larger batches compile separately
        for end_id in (END, -1):
            eager = greedy_decode(sharp_model, [token_row(p) for p in batch], limits[: len(batch)], end_id, PAD, compile=False)
            assert greedy_decode(sharp_model, [token_row(p) for p in batch], limits[: len(batch)], end_id, PAD, compile=True) == eager
    assert decode._compiled is not False  # it really ran compiled


def test_decoding_steps_attend_over_a_few_key_lengths_not_a_new_one_per_step(tiny_model, monkeypatch):
    """On CPU oneDNN compiles and keeps a kernel per matmul shape (about 1 MB each): a new key length at every
    step made an evaluation hold 2 GB of them (bench/eval_memory.py). Steps read the cache in spans of SPAN
    slots, the unfilled ones masked, and decode what a naive loop does."""
    lengths, update = set(), KVCache.update

    def spy(self, layer, k, v, at):
        keys, values = update(self, layer, k, v, at)
        if k.shape[2] == 1:  # a decoding step
            lengths.add(keys.shape[2])
        return keys, values

    monkeypatch.setattr(KVCache, "update", spy)
    prompt = PROMPTS[1] * 2  # 28 tokens, then 90 new ones: key lengths 29..118
    [tokens] = greedy_decode(tiny_model, [token_row(prompt)], [90], END + 100, PAD)  # an end id never produced
    assert len(tokens) == 90 and tokens == naive_greedy(tiny_model, prompt, 90, END + 100)[0]
    assert lengths == {SPAN, len(prompt) + 90}  # 29..64 read 64 slots, 65..118 the capacity: 2 lengths, not 90
