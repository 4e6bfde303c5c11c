"""arc.inference.search: threshold DFS == brute-force enumeration; greedy is the only output above p > 0.5; the
candidate cap and the single cache; sequence_nll == full-forward log-probs; reproducible sampling."""
import inspect
import itertools
import math
import sys

import pytest
import torch

from arc.inference.decode import greedy_decode
from arc.inference.search import dfs_decode, sample_decode
from arc.layouts.rows import token_row
from arc.model.config import ModelConfig
from arc.model.transformer import Transformer


@torch.inference_mode()
def sequence_nll(model, prompt: list[int], continuations: list[list[int]], batch_size: int = 16) -> list[float]:
    """The reference scorer: summed NLL of each continuation given the prompt, by teacher forcing (prompt +
    continuation, 0-padded on the right into batches: causal attention keeps padding out of every score)."""
    n_prompt, result = len(prompt), []
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        longest = max(len(c) for c in chunk)
        tokens = torch.zeros((len(chunk), n_prompt + longest), dtype=torch.long)
        for row, c in enumerate(chunk):
            tokens[row, : n_prompt + len(c)] = torch.tensor(prompt + c, dtype=torch.long)
        # logits at position n_prompt - 1 + i predict continuation token i
        logits = model(tokens)[:, n_prompt - 1 : -1].double()
        token_nll = -torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, n_prompt:, None])[..., 0]
        counted = torch.arange(longest)[None, :] < torch.tensor([len(c) for c in chunk])[:, None]
        result += (token_nll * counted).sum(-1).tolist()
    return result


pytestmark = pytest.mark.usefixtures("one_thread")

END = 3  # vocabulary {0, 1, 2, END}
MAX_NEW = 4
PROMPT = [0, 1, 2, 0]
SMALL = ModelConfig(vocab_size=4, d_model=16, n_layers=1, n_heads=2, max_seq_len=32, rope="1d")


def small_model(seed: int, head_scale: float) -> Transformer:
    """Random weights with the output head scaled up, so distributions are peaky and several
    sequences clear a threshold (head_scale 1 gives a near-uniform model)."""
    torch.manual_seed(seed)
    model = Transformer(SMALL).eval()
    with torch.no_grad():
        model.head.weight.mul_(head_scale)
    return model


@torch.no_grad()
def brute_force_nll(model: Transformer, prompt: list[int], max_new: int) -> dict[tuple[int, ...], float]:
    """NLL of every sequence of 1..max_new tokens whose only END is its last, by full forwards (no cache)."""
    result = {}
    for n in range(1, max_new + 1):
        seqs = [list(pre) + [END] for pre in itertools.product(range(END), repeat=n - 1)]
        tokens = torch.tensor([prompt + s for s in seqs])
        logp = torch.log_softmax(model(tokens).double(), dim=-1)[:, len(prompt) - 1 : -1]  # predicts seq[i]
        nll = -logp.gather(-1, tokens[:, len(prompt) :, None])[..., 0].sum(-1)
        result.update({tuple(s): float(x) for s, x in zip(seqs, nll)})
    return result


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_dfs_equals_brute_force(seed):
    model = small_model(seed, head_scale=10)
    everything = brute_force_nll(model, PROMPT, MAX_NEW)
    sizes = []
    for threshold in (0.02, 0.05, 0.2):
        budget = -math.log(threshold)
        # no sequence sits so close to the threshold that cache-vs-full float noise could flip it
        assert min(abs(nll - budget) for nll in everything.values()) > 1e-4
        expected = sorted((nll, s) for s, nll in everything.items() if nll < budget)  # prob descending
        got = dfs_decode(model, token_row(PROMPT), MAX_NEW, END, threshold=threshold, max_candidates=1000)
        assert [tuple(c.tokens) for c in got] == [s for _, s in expected]
        assert [c.nll for c in got] == pytest.approx([nll for nll, _ in expected], abs=1e-5, rel=0)
        sizes.append(len(expected))
    assert max(sizes) >= 3  # not vacuous: several sequences clear the lowest threshold
    assert sizes == sorted(sizes, reverse=True)  # a higher threshold keeps a subset


def test_high_threshold_returns_exactly_greedy():
    cases = set()
    for seed, prompt in itertools.product(range(4), ([0, 1, 2, 0], [2, 2, 1])):
        model = small_model(seed, head_scale=40)
        greedy = greedy_decode(model, [token_row(prompt)], [6], END, pad_id=0)[0]
        p = math.exp(-sequence_nll(model, prompt, [greedy])[0])
        above = greedy[-1] == END and p > 0.6  # anything above p > 0.5 must take the argmax at every step
        got = dfs_decode(model, token_row(prompt), 6, END, threshold=0.6)
        assert [c.tokens for c in got] == ([greedy] if above else [])
        cases.add(above)
    assert cases == {True, False}  # both outcomes are exercised


def test_max_candidates_and_one_bounded_cache():
    model = small_model(2, head_scale=10)
    everything = dfs_decode(model, token_row(PROMPT), MAX_NEW, END, threshold=0.02, max_candidates=1000)
    assert len(everything) >= 5
    caches, lengths = [], []
    new_cache = model.new_cache
    model.new_cache = lambda *a, **k: caches.append(new_cache(*a, **k)) or caches[-1]
    model.register_forward_hook(lambda mod, args, kwargs, out: lengths.append(kwargs["cache"].length), with_kwargs=True)
    capped = dfs_decode(model, token_row(PROMPT), MAX_NEW, END, threshold=0.02, max_candidates=2)
    assert len(capped) == 2
    assert all(c in everything for c in capped)
    assert len(caches) == 1 and caches[0].capacity == len(PROMPT) + MAX_NEW  # one cache, never copied
    assert max(lengths) <= len(PROMPT) + MAX_NEW
    # the first complete path explored is the greedy one
    greedy = greedy_decode(model, [token_row(PROMPT)], [MAX_NEW], END, pad_id=0)[0]
    assert [c.tokens for c in dfs_decode(model, token_row(PROMPT), MAX_NEW, END, threshold=0.02, max_candidates=1)] == [greedy]
    assert dfs_decode(model, token_row(PROMPT), MAX_NEW, END, threshold=0.02, time_limit_s=0.0) == []  # out of time at once


def test_dfs_depth_is_not_bounded_by_recursion():
    # a model that always says 0 (prob ~1): one branch of 300 tokens, run under a recursion limit only
    # 150 frames above the caller's, so a recursive search (a frame or more per level) would fail
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=4, d_model=16, n_layers=1, n_heads=2, max_seq_len=320, rope="1d")).eval()
    with torch.no_grad():  # as conftest.bigram_model: blocks add nothing, every token embeds the same
        for name, p in model.named_parameters():
            if name.endswith(("wo.weight", "w_down.weight", "head.weight")):
                p.zero_()
        model.embed.weight.fill_(1.0)
        model.head.weight[0].fill_(10.0)  # logit 160 for token 0, 0 for the others
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 150)
    try:
        got = dfs_decode(model, token_row([1, 2]), 300, END, threshold=0.5)
    finally:
        sys.setrecursionlimit(limit)
    assert got == []  # END never comes, so the single branch is dropped at the length limit
    assert len(calls) == 300  # the prefill, then one token fed per level down to depth 299


def test_sequence_nll_equals_full_forward():
    model = small_model(0, head_scale=10)
    conts = [[3], [0, 1, 3], [2, 2, 2, 2, 1], [], [1, 0, 3]]
    got = sequence_nll(model, PROMPT, conts, batch_size=2)  # several batches, ragged within each
    for cont, nll in zip(conts, got):
        tokens = torch.tensor([PROMPT + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(tokens)[0].double(), dim=-1)
        expected = -sum(float(logp[len(PROMPT) - 1 + i, t]) for i, t in enumerate(cont))
        assert nll == pytest.approx(expected, abs=1e-5, rel=0)


def test_sample_decode_reproducible_distinct_sorted_and_scored():
    model = small_model(0, head_scale=3)
    kw = dict(n=16, max_new_tokens=6, end_id=END)
    a, b = sample_decode(model, token_row(PROMPT), seed=0, **kw), sample_decode(model, token_row(PROMPT), seed=0, **kw)
    assert a == b and len(a) >= 3
    assert [c.tokens for c in sample_decode(model, token_row(PROMPT), seed=1, **kw)] != [c.tokens for c in a]
    assert len({tuple(c.tokens) for c in a}) == len(a)  # distinct
    assert [c.nll for c in a] == sorted(c.nll for c in a)
    assert all(c.tokens[-1] == END and END not in c.tokens[:-1] and len(c.tokens) <= 6 for c in a)
    # the NLL is under the true distribution, whatever temperature / top-k drew the sample
    hot = sample_decode(model, token_row(PROMPT), temperature=2.0, top_k=3, seed=0, **kw)
    for cands in (a, hot):
        rescored = sequence_nll(model, PROMPT, [c.tokens for c in cands])
        assert [c.nll for c in cands] == pytest.approx(rescored, abs=1e-5, rel=0)
    # top-1 sampling is greedy decoding
    greedy = greedy_decode(model, [token_row(PROMPT)], [6], END, pad_id=0)[0]
    assert [c.tokens for c in sample_decode(model, token_row(PROMPT), top_k=1, **kw)] == ([greedy] if greedy[-1] == END else [])
