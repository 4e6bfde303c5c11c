"""arc.inference.ensemble: views, teacher-forced candidate NLLs against a direct computation, voting and choosing."""
import numpy as np
import pytest
import torch
from conftest import g

from arc.data.augment import identity_augmentation, make_views
from arc.data.tasks import Example, Pair
from arc.data.tokenizer import GridTokenizer
from arc.inference.ensemble import (
    candidate_nll,
    choose_attempts,
    grid_key,
    pool_candidates,
    product_of_experts,
    vote,
)
from arc.layouts.in_context import InContextLayout
from arc.model.config import ModelConfig
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=256, rope="1d")



@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


def example() -> Example:
    rng = np.random.default_rng(1)
    def grid(h, w):
        return rng.integers(0, 10, size=(h, w), dtype=np.uint8)
    train = [Pair(grid(2, 3), grid(3, 2)), Pair(grid(3, 3), grid(2, 2)), Pair(grid(1, 4), grid(2, 3))]
    return Example("t", 0, train, Pair(grid(3, 2)))  # the test output is unknown, as at prediction time


CANDIDATES = [g([[1, 2], [3, 4]]), g([[0, 5, 5]]), g([[7], [0], [9]])]


def direct_nll(model, tokenizer, ex: Example, candidate, view) -> float:
    """The reference: build the augmented example by hand, one full forward, sum -log p over the answer."""
    shown = view.apply(Example(ex.task_id, ex.test_index, ex.train, Pair(ex.test.input, candidate)))
    row = tokenizer.encode(shown)
    ids = torch.from_numpy(row.ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None])[0].double(), dim=-1)  # (T, vocab)
    targets = np.flatnonzero(row.loss_mask)  # positions t whose token ids[t] is predicted from t - 1
    return float(-sum(logp[t - 1, ids[t]] for t in targets))


def test_make_views():
    views = make_views(n_train=3, k=6, seed=7)
    assert len(views) == 6 and views[0] == identity_augmentation(3)
    keys = {(v.transform, v.colours, v.order) for v in views}
    assert len(keys) == 6  # distinct
    assert all(v.colours[0] == 0 for v in views)  # keep_background
    assert views == make_views(3, 6, seed=7)  # reproducible
    assert views != make_views(3, 6, seed=8)
    assert len(make_views(1, 1, seed=0)) == 1
    assert any(v.colours[0] != 0 for v in make_views(2, 8, seed=0, keep_background=False))
    with pytest.raises(ValueError):
        make_views(1, 0, seed=0)


def test_candidate_nll_matches_direct_computation(model):
    tok, ex = InContextLayout(GridTokenizer()), example()
    views = make_views(len(ex.train), 4, seed=3)
    nll = candidate_nll(model, tok, ex, CANDIDATES, views, max_tokens=CFG.max_seq_len, batch_size=16)
    assert nll.shape == (3, 4) and np.isfinite(nll).all()
    expected = np.array([[direct_nll(model, tok, ex, c, v) for v in views] for c in CANDIDATES])
    np.testing.assert_allclose(nll, expected, rtol=1e-4, atol=1e-4)
    one_by_one = candidate_nll(model, tok, ex, CANDIDATES, views, max_tokens=CFG.max_seq_len, batch_size=1)
    np.testing.assert_allclose(one_by_one, nll, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(product_of_experts(nll), expected.sum(axis=1), rtol=1e-4)


def test_candidate_nll_too_long_is_inf(model):
    tok, ex = InContextLayout(GridTokenizer()), example()
    views = make_views(len(ex.train), 2, seed=0)
    big = np.zeros((6, 6), dtype=np.uint8)  # 43 answer tokens
    prompt = tok.length(ex, 0)  # all demonstrations fit; room is left for 13 answer tokens
    nll = candidate_nll(model, tok, ex, [CANDIDATES[0], big], views, max_tokens=prompt + 13)
    assert np.isfinite(nll[0]).all() and np.isinf(nll[1]).all()
    assert np.isinf(product_of_experts(nll)[1])
    assert np.isinf(candidate_nll(model, tok, ex, CANDIDATES, views, max_tokens=20)).all()  # nothing fits


def test_pool_counts_each_voter_once_per_grid_in_first_seen_order():
    A, B, C = g([[1]]), g([[2, 2]]), g([[3], [3]])
    nan = float("nan")
    pool = pool_candidates([(0, A, nan), (0, B, 2.0), (1, A, 1.5), (2, C, nan), (2, A.copy(), 0.5), (2, A, nan)])
    assert [(grid_key(p.grid), p.votes, p.nll) for p in pool] == [
        (grid_key(A), 3, 0.5), (grid_key(B), 1, 2.0), (grid_key(C), 1, float("inf"))]  # nan: unscored
    assert pool_candidates([]) == []


def test_vote_ranks_by_votes_then_nll_then_first_seen():
    grids = [g([[k]]) for k in range(5)]
    nan = float("nan")
    pool = pool_candidates([(0, grids[0], nan), (0, grids[1], 3.0), (0, grids[2], nan), (0, grids[3], 1.0),
                            (1, grids[4], nan), (2, grids[4], nan)])
    ranked = [int(p.grid[0, 0]) for p in vote(pool)]
    # 4 has two votes; then the scored by NLL (3 before 1); then the unscored in the order first seen
    assert ranked == [4, 3, 1, 0, 2]


def test_choose_attempts():
    A, B, C = g([[1]]), g([[2]]), g([[1, 1]])
    grids = [A, B, A.copy(), C]
    picked = choose_attempts(grids, [0.5, 3.0, 0.1, 2.0])
    assert [grid_key(x) for x in picked] == [grid_key(A), grid_key(C)]  # A once, then the next best
    picked = choose_attempts(grids, [5, 1, 5, 2], lower_is_better=False)
    assert [grid_key(x) for x in picked] == [grid_key(A), grid_key(C)]
    assert len(choose_attempts([A], [1.0])) == 1 and choose_attempts([], []) == []
    assert grid_key(np.array([[1]], dtype=np.int64)) == grid_key(A) != grid_key(g([[1], [1]]))
