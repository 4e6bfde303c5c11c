"""Issue 20's switches ("learn more per token"), each with known answers: the schedules' values at known steps and
seconds, Muon on exactly the blocks' matrices, dropout that is off in eval, each pair's pool of views (distinct
per cycle, only its own colours renamed), the evaluated share's final phase, a --minutes run on a fake clock, the
refused combinations, and bitwise resume of a Muon run and of a view-pool run."""
import itertools
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, TINY, g
from safetensors.torch import load_file

from arc.data.augment import N_COLOURS, own_colours, view_pool
from arc.data.tasks import Example, Pair, Task
from arc.data.tokenizer import GridTokenizer
from arc.infra.config import validate
from arc.infra.errors import ConfigError
from arc.layouts.config import LayoutConfig
from arc.layouts.pair import PairLayout, PairSampler
from arc.model.checkpoint import checkpoint_dir, load_train_state
from arc.model.lora import add_lora
from arc.model.transformer import Transformer
from arc.training.config import TrainConfig
from arc.training.optim import MuonAndAdamW, Schedule, auto_optimizer, last_part_start, lr_at, make_optimizer, set_lr
from arc.training.steps import TrainingClock
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


# --- schedules ----------------------------------------------------------------------------------------------


def test_a_step_budget_cosine_is_lr_at_itself():
    schedule = Schedule(1e-3, 30, 0.1, "cosine", max_steps=1000)
    assert all(schedule.lr(s) == lr_at(s, 1e-3, 30, 1000, 0.1) for s in range(0, 1100, 7))  # bitwise: runs unchanged


def test_wsd_over_steps_known_values():
    # warmup 2 steps, peak until the last round(0.2 * 10) = 2 steps, which decay linearly to 0.1 at step 10
    schedule = Schedule(1.0, 2, 0.1, "wsd", decay_fraction=0.2, max_steps=10)
    assert [schedule.lr(s) for s in range(11)] == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 1, 1, 0.55, 0.1])
    assert last_part_start(1000, 0.2) == 800 and last_part_start(10, 0.0) == 10
    assert [schedule.in_last_part(0.3, s) for s in (6, 7)] == [False, True]  # the last 3 steps: 7, 8, 9


def test_a_time_budget_runs_the_schedule_on_the_clock():
    wsd = Schedule(1.0, 2, 0.1, "wsd", decay_fraction=0.25, seconds=100.0)
    assert wsd.lr(0, elapsed=90.0) == 0.5  # the warmup counts steps, whatever the time
    assert [wsd.lr(5, t) for t in (0, 75, 87.5, 100, 120)] == pytest.approx([1, 1, 0.55, 0.1, 0.1])
    cosine = Schedule(1.0, 2, 0.1, "cosine", seconds=100.0)
    assert [cosine.lr(5, t) for t in (0, 50, 100, 120)] == pytest.approx([1, 0.55, 0.1, 0.1])
    assert [wsd.in_last_part(0.5, 9, t) for t in (49.0, 50.0)] == [False, True]
    assert not wsd.over(99.9) and wsd.over(100.0) and not Schedule(1.0, 2, 0.1, max_steps=10).over(1e9)


# --- Muon ---------------------------------------------------------------------------------------------------


def block_matrices(n_layers: int) -> set[str]:
    return {f"blocks.{i}.{part}.{w}.weight" for i in range(n_layers)
            for part, names in (("attn", ("wq", "wk", "wv", "wo")), ("mlp", ("w_gate", "w_up", "w_down"))) for w in names}


def test_muon_trains_exactly_the_block_matrices_and_adamw_the_rest():
    model = Transformer(replace(TINY, n_tasks=3, transform_embedding=True, grid_positions=True))
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, 1e-3, 0.1, "muon", muon_lr=0.02)
    assert isinstance(optimizer, MuonAndAdamW) and optimizer.param_groups == optimizer.muon.param_groups + optimizer.adamw.param_groups
    assert isinstance(optimizer.muon, torch.optim.Muon) and isinstance(optimizer.adamw, torch.optim.AdamW)
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in optimizer.adamw.param_groups)
    assert muon == block_matrices(TINY.n_layers)
    assert decay == {"head.weight"}  # the one matrix left to AdamW (decayed); embeddings and norms are not
    assert no_decay == {"embed.weight", "embed_row.weight", "embed_col.weight", "embed_task.weight", "embed_transform.weight",
                        "norm.weight"} | {f"blocks.{i}.{n}.weight" for i in range(TINY.n_layers) for n in ("attn_norm", "mlp_norm")}
    assert isinstance(make_optimizer(model, 1e-3, 0.1), torch.optim.AdamW)  # the default (test-time training, adaptation)
    add_lora(model, 2, 4.0, 0.0, ("wq",), ())
    with pytest.raises(ValueError, match="no block matrix is trained"):
        make_optimizer(model, 1e-3, 0.1, "muon")


def test_muon_follows_the_schedule_from_its_own_peak_and_resumes_with_the_new_settings():
    torch.manual_seed(0)
    model = Transformer(SMALL)
    optimizer = make_optimizer(model, 1e-3, 0.1, "muon", muon_lr=0.02)
    set_lr(optimizer, 5e-4)  # half way down from peak: Muon at half its own peak
    (muon,), (decay, no_decay) = optimizer.muon.param_groups, optimizer.adamw.param_groups
    assert decay["lr"] == no_decay["lr"] == 5e-4 and muon["lr"] == pytest.approx(0.01)
    assert muon["lr"] * muon["weight_decay"] == pytest.approx(decay["lr"] * decay["weight_decay"])  # the same shrink per step
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    again = make_optimizer(model, 1e-3, 0.1, "muon", muon_lr=0.04)  # a resume with another --muon-lr
    again.load_state_dict(state)
    buffers = lambda o: [s["momentum_buffer"] for s in o.muon.state.values()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(buffers(optimizer), buffers(again))) and buffers(again)
    set_lr(again, 1e-3)
    assert again.muon.param_groups[0]["lr"] == pytest.approx(0.04)  # the new setting, not the checkpoint's
    with pytest.raises(ValueError, match="another --optimizer"):
        again.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


@pytest.mark.parametrize("precision, lora_rank, expected", [("bf16", 0, "muon"), ("fp32", 0, "adamw"), ("bf16", 2, "adamw")])
def test_optimizer_auto_is_muon_for_a_bf16_full_weight_run_and_is_saved_as_chosen(config, precision, lora_rank, expected):
    assert auto_optimizer({"bf16": torch.bfloat16, "fp32": None}[precision], lora_rank) == expected
    if lora_rank:  # a LoRA run needs a base to adapt: the rule above is its whole answer
        return
    run = train(config(f"auto-{precision}", precision=precision, stop_at_step=2))
    saved = json.loads((checkpoint_dir(run) / "config.json").read_text())["training"]
    assert saved["optimizer"] == expected  # resolved once: a resume on a machine that would choose otherwise keeps it
    state = load_train_state(run)["optimizer"]
    assert ("muon" in state) == (expected == "muon")


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
    layout = PairLayout(GridTokenizer(), LayoutConfig(view_pool=k), [t.id for t in train_tasks + evaluated])
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


def test_a_pool_trained_layout_predicts_and_adapts_under_the_same_kind_of_views():
    layout = PairLayout(GridTokenizer(), LayoutConfig(view_pool=4), ["t"])
    example = Example("t", 0, [Pair(g([[1]]), g([[2]]))], Pair(g([[0, 3], [5, 3]])))
    views = layout.views(example, 10, seed=0)
    assert [v.transform for v in views] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1] and views[0].colours == tuple(range(N_COLOURS))
    assert len({(v.transform, v.colours) for v in views}) == 10  # distinct, also past the 8 transforms
    assert all(v.colours[c] == c for v in views for c in range(N_COLOURS) if c not in (3, 5))  # the input's own colours only
    assert all(v.order == (0,) for v in views)
    with pytest.raises(ValueError, match="could not draw 17 distinct views"):
        layout.views(example, 17, seed=0)  # 8 transforms x 2 permutations of {3, 5}
    assert layout.demonstration_sampler(tasks(2, 0, 0), 64, 0).view_pool == 4  # adaptation: the pools too


# --- whole runs: --minutes on a fake clock, bitwise resume, refused combinations -------------------------------


@pytest.fixture
def config(tiny_train_config):
    """The pair layout, 6 steps, a checkpoint every 2, a log line every step."""
    return lambda out, **kw: tiny_train_config(out, **{"layout": "pair", "model": SMALL, "max_steps": 6, "save_every": 2,
                                                       "log_every": 1, **kw})


def logged(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a, b) -> None:
    """Bitwise-equal final weights, and each step logged once with the same loss and lr (the training lines: the
    early stop measured one more eval loss)."""
    wa, wb = (load_file(str(checkpoint_dir(run) / "model.safetensors")) for run in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = lambda run: [(r["step"], r["loss"], r["lr"]) for r in logged(run) if "loss" in r]  # noqa: E731
    assert steps(a) == steps(b) and len(steps(a)) == 6


@pytest.mark.parametrize("switches", [
    dict(optimizer="muon", schedule="wsd", decay_fraction=0.5, model=replace(SMALL, dropout=0.1)),
    dict(view_pool=4, final_fraction=0.5, final_evaluated_share=1.0),
], ids=["muon-wsd-dropout", "view-pool-final-phase"])
def test_a_killed_run_resumes_bitwise(config, switches):
    whole = train(config("whole", **switches))
    train(config("cut", stop_at_step=3, **switches))
    assert_same_run(whole, train(config("cut", **switches), resume=True))


def test_a_minutes_run_ends_on_time_and_resumes_the_same_schedule(config, monkeypatch):
    """A fake clock where every training step takes exactly 1 s: --minutes 0.1 is 6 steps, step s starts after s
    seconds, the wsd decay takes the last half, the final phase starts at 3 s."""
    monkeypatch.setattr(TrainingClock, "now", staticmethod(itertools.count().__next__))
    switches = dict(minutes=0.1, max_steps=TrainConfig().max_steps, schedule="wsd", decay_fraction=0.5, warmup_steps=2, final_fraction=0.5)
    whole = train(config("whole", **switches))
    lines = [r for r in logged(whole) if "loss" in r]
    schedule = Schedule(1e-3, 2, 0.1, "wsd", 0.5, seconds=6.0)
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in lines] == [schedule.lr(s, float(s)) for s in range(6)]
    assert [r["lr"] for r in lines] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 0.7e-3, 0.4e-3])
    state = load_train_state(whole)
    assert (state["step"], state["training_seconds"], state["final_phase_step"]) == (6, 6.0, 3)
    # killed after step 4 (past the final phase's start): the resumed run continues the clock and the phase
    train(config("cut", stop_at_step=4, **switches))
    assert_same_run(whole, train(config("cut", **switches), resume=True))


def test_the_recipe_switches_refuse_what_they_would_ignore(config):
    refused = {
        "--max-steps 50: a --minutes run has no step budget": dict(minutes=5.0, max_steps=50),
        "--decay-fraction 0.3: applies to --schedule wsd only": dict(decay_fraction=0.3),
        "--muon-lr 0.01: applies to --optimizer muon or auto only": dict(optimizer="adamw", muon_lr=0.01),
        "--final-evaluated-share 0.5: applies with --final-fraction > 0 only": dict(final_evaluated_share=0.5),
        "--final-fraction 0.2: the final phase draws fresh rows": dict(final_fraction=0.2, max_examples=10),
        "--view-pool 2 --colour-maps 2: both choose": dict(view_pool=2, colour_maps=2),
        "--view-pool 2: a pool of augmented views, while --no-augment": dict(view_pool=2, augment=False),
        "--view-pool 2: applies to the pair layout only": dict(view_pool=2, layout="in_context"),
        "--dropout 1.0: must be a finite number >= 0 and < 1": dict(model=replace(SMALL, dropout=1.0)),
        "--schedule linear: must be one of cosine, wsd": dict(schedule="linear"),
    }
    for message, settings in refused.items():
        with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
            validate(config("refused", **settings))
    validate(config("fine", minutes=5.0, max_steps=TrainConfig().max_steps, schedule="wsd", decay_fraction=0.3, optimizer="muon", muon_lr=0.01,
                    view_pool=2, final_fraction=0.2, final_evaluated_share=0.5, model=replace(SMALL, dropout=0.1)))
    assert TrainConfig().optimizer == "auto" and TrainConfig().minutes is None and TrainConfig().layout.view_pool == 0
