"""Issue 20's switches ("learn more per token"), each with known answers: dropout that is off in eval, each pair's
pool of views (distinct per cycle, only its own colours renamed), the evaluated share's final phase."""
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY

from arc.data.augment import N_COLOURS, own_colours, view_pool
from arc.data.tasks import Pair, Task
from arc.data.tokenizer import GridTokenizer
from arc.layouts.pair import PairLayout, PairSampler
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")


# --- dropout ------------------------------------------------------------------------------------------------


def test_dropout_is_off_in_eval_mode_and_on_in_train_mode():
    torch.manual_seed(0)
    plain = Transformer(TINY).eval()
    dropped = Transformer(replace(TINY, dropout=0.5))
    dropped.load_state_dict(plain.state_dict())  # the same weights: dropout has none
    tokens = torch.randint(0, 10, (2, 12))
    dropped.eval()
    assert torch.equal(dropped(tokens), plain(tokens))
    dropped.train()
    assert not torch.allclose(dropped(tokens), plain(tokens))


# --- the view pool ------------------------------------------------------------------------------------------


def g(rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_a_pool_holds_distinct_views_that_rename_only_the_pairs_own_colours():
    pair = Pair(g([[0, 3], [3, 0]]), g([[7, 0, 3]]))
    assert own_colours(pair) == (3, 7) and own_colours(pair, keep_background=False) == (0, 3, 7)
    everything = view_pool(pair, 100, np.random.default_rng(0))
    assert len(everything) == 8 * 2  # 8 transforms x 2! permutations of {3, 7}: all of them
    assert everything[0].transform == 0 and everything[0].colours == tuple(range(N_COLOURS))  # the pair as given first
    assert len({(v.transform, v.colours) for v in everything}) == 16
    for view in everything:
        assert {view.colours[c] for c in (3, 7)} == {3, 7}  # own colours to own colours
        assert all(view.colours[c] == c for c in range(N_COLOURS) if c not in (3, 7))  # black and absent colours stay
    few = view_pool(pair, 5, np.random.default_rng(1), keep_background=False, transforms=(0, 2, 5, 6))
    assert len({(v.transform, v.colours) for v in few}) == 5 and {v.transform for v in few} <= {0, 2, 5, 6}
    assert all(v.colours[c] == c for v in few for c in range(N_COLOURS) if c not in (0, 3, 7))


def tasks(n: int, first: int, seed: int, test_outputs: bool = True) -> list[Task]:
    """n tasks of 2-3 pairs of small random grids (up to 3 colours each)."""
    rng = np.random.default_rng(seed)
    grid = lambda: rng.choice(rng.choice(10, size=3, replace=False), size=tuple(rng.integers(1, 4, size=2)))  # noqa: E731
    pair = lambda out: Pair(grid(), grid() if out else None)  # noqa: E731
    return [Task(f"t{first + i}", [pair(True) for _ in range(int(rng.integers(2, 4)))], [pair(test_outputs)])
            for i in range(n)]


def pool_sampler(k: int, share: float = 0.5, seed: int = 0) -> PairSampler:
    train_tasks, evaluated = tasks(5, 0, seed), tasks(2, 5, seed + 1, test_outputs=False)
    layout = PairLayout(GridTokenizer(), {"view_pool": k}, [t.id for t in train_tasks + evaluated])
    return PairSampler(layout, train_tasks, evaluated, 64, seed, share, view_pool=k)


def test_each_pair_shows_its_pool_once_per_cycle_and_tasks_and_pairs_come_in_rounds():
    sampler = pool_sampler(k=4)
    shown = defaultdict(list)  # (task id, pair) -> its views, in the order drawn
    for i in range(1200):
        task_id, pair, view = sampler.pooled_choice(i)
        shown[task_id, id(pair)].append((view.transform, view.colours))
    assert len(shown) == sum(len(pairs) for group in sampler.pooled for _, pairs in group)  # every pair was drawn
    for views in shown.values():
        for cycle in range(len(views) // 4):
            assert len(set(views[4 * cycle : 4 * cycle + 4])) == 4  # 4 distinct views in every cycle ...
        assert set(views) == set(views[:4])  # ... always the same 4: the pair's pool
    per_task = defaultdict(int)
    for task_id, _ in shown:
        per_task[task_id] += len(shown[task_id, _])
    assert len({per_task[f"t{i}"] for i in range(5)}) == 1 and per_task["t5"] == per_task["t6"]  # rounds: equal counts
    assert per_task["t5"] * 2 == 600 and per_task["t0"] * 5 == 600  # share 0.5 exactly: 600 of 1,200 rows evaluated


def test_pool_rows_are_pure_functions_of_the_index_and_keep_to_the_pairs_colours():
    sampler, again = pool_sampler(k=6, seed=3), pool_sampler(k=6, seed=3)
    for i in (0, 17, 999, 5):  # any order: nothing is counted
        row, same = sampler.row(i), again.row(i)
        assert np.array_equal(row.ids, same.ids) and (row.task, row.transform) == (same.task, same.transform)
        task_id, pair, _ = sampler.pooled_choice(i)
        assert sampler.layout.task_ids[row.task] == task_id
        cells = {int(t) for t in row.ids if t < 10}
        assert cells <= set(own_colours(pair)) | {0}  # only colours the pair has (black stays black)


def test_the_final_phase_changes_the_share_from_its_row_on_and_nothing_before():
    for k in (0, 3):  # fresh random views, and the pool
        sampler, plain = pool_sampler(k), pool_sampler(k)
        sampler.final_phase(from_row=200, share=1.0)
        evaluated = lambda s, i: s.row(i).task >= 5  # noqa: E731  (tasks t5, t6 are the evaluated ones)
        assert all(np.array_equal(sampler.row(i).ids, plain.row(i).ids) for i in range(0, 200, 7))
        assert all(evaluated(sampler, i) for i in range(200, 300))
        assert 20 < sum(evaluated(plain, i) for i in range(200, 300)) < 80
    sampler = pool_sampler(3, share=0.5)
    sampler.final_phase(from_row=10, share=0.25)
    assert [sampler.evaluated_before(i) for i in (10, 14, 18)] == [5, 6, 7]
