"""Packed batches (arc.layouts.packing, arc.model.packed): a packed row is computed exactly as it would be
alone (attention, RoPE and grid positions, grid numbers, task and transform ids), so packed and padded
batches of the same rows give the same loss and gradients; packing is a pure function of (seed, index);
a packed run resumes exactly; bf16 autocast is chosen by measurement."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, random_task
from safetensors.torch import load_file

from arc.data.tasks import parse_task
from arc.data.tokenizer import PAD, GridTokenizer
from arc.infra import runtime
from arc.infra.prefetch import Ahead
from arc.layouts.packing import ROWS_PER_CHUNK, PackedBatches, collate_packed
from arc.layouts.config import LayoutConfig
from arc.layouts.pair import PairLayout
from arc.layouts.rows import IGNORE, collate
from arc.model.packed import block_diagonal_mask, row_attention, row_positions, row_starts
from arc.model.positions import grid_numbers, grid_positions
from arc.model.transformer import Transformer
from arc.model.checkpoint import checkpoint_dir, load_train_state
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def sampler(seed: int = 0, n_tasks: int = 4, row_tokens: int = 128):
    rng = np.random.default_rng(seed)
    tasks = [parse_task(f"t{i}", random_task(rng, n_train=3, side=6), "test") for i in range(n_tasks)]
    layout = PairLayout(GridTokenizer(), LayoutConfig(pack=True), task_ids=[t.id for t in tasks])
    return layout.sampler(tasks, [], row_tokens, seed)


def summed_loss(model, batch) -> torch.Tensor:
    packed = {} if batch.segments is None else {"segments": batch.segments}
    logits = model(batch.inputs, task=batch.task, transform=batch.transform, **packed)
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("model_cfg", [
    replace(TINY, rope="3d", n_tasks=4, transform_embedding=True),  # the pair layout's model
    replace(TINY, rope="1d", grid_positions=True, n_tasks=4, transform_embedding=True, n_kv_heads=2),
], ids=["3d", "1d_grid_gqa"])
def test_packed_and_padded_batches_give_the_same_loss_and_gradients(model_cfg):
    rows = [sampler().row(i) for i in range(12)]
    sequences = [[]]
    for r in rows:  # next fit in 128 tokens
        if sum(len(x.ids) - 1 for x in sequences[-1]) + len(r.ids) - 1 > 128:
            sequences.append([])
        sequences[-1].append(r)
    assert len(sequences) < len(rows)
    packed = collate_packed(sequences, 128)
    padded = collate(rows)
    assert int((packed.targets != IGNORE).sum()) == int((padded.targets != IGNORE).sum())
    torch.manual_seed(0)
    model = Transformer(model_cfg)
    with torch.no_grad():  # large task and transform vectors: a row reading another row's would show
        model.embed_task.weight.normal_(0, 1.0)
        model.embed_transform.weight.normal_(0, 1.0)
    grads = []
    for batch in (packed, padded):
        model.zero_grad()
        loss = summed_loss(model, batch) / int((batch.targets != IGNORE).sum())  # the mean per target token
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (packed_loss, packed_grads), (padded_loss, padded_grads) = grads
    assert packed_loss == pytest.approx(padded_loss, rel=1e-6)
    for a, b in zip(packed_grads, padded_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_row_attention_equals_the_block_diagonal_mask():
    torch.manual_seed(0)
    segments = torch.tensor([[0] * 7 + [1] * 12 + [2] * 3 + [3] * 10, [0] * 32, [0, 1, 1, 2, 3, 3, 3, 3] + [4] * 24])
    q, k, v = (torch.randn(3, 4, 32, 8, requires_grad=True) for _ in range(3))
    ours = row_attention(q, k, v, segments)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=block_diagonal_mask(segments))
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(reference, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_positions_start_afresh_at_each_packed_row():
    rows = [sampler().row(i).ids for i in range(6)]
    tokens = torch.tensor(np.concatenate(rows))[None]
    segments = torch.tensor(np.repeat(np.arange(len(rows)), [len(r) for r in rows]))[None]
    starts = row_starts(segments)
    row, col, _ = grid_positions(tokens, torch.zeros(1, 2, dtype=torch.long), starts)
    grid = grid_numbers(tokens, torch.zeros(1, dtype=torch.long), starts)
    at = 0
    for ids in rows:
        alone = torch.tensor(ids)[None]
        r, c, _ = grid_positions(alone, torch.zeros(1, 2, dtype=torch.long))
        n = len(ids)
        assert row[0, at : at + n].tolist() == r[0].tolist() and col[0, at : at + n].tolist() == c[0].tolist()
        assert grid[0, at : at + n].tolist() == grid_numbers(alone, torch.zeros(1, dtype=torch.long))[0].tolist()
        assert row_positions(starts)[0, at : at + n].tolist() == list(range(n))
        at += n


def test_packed_batches_are_a_pure_function_of_seed_and_index():
    a, b = PackedBatches(sampler(), 2, 128), PackedBatches(sampler(), 2, 128)
    for index in (5, 0, 17, 5):  # any order, any object: the same batch
        x, y = a(index), b(index)
        assert all(torch.equal(s, t) for s, t in zip(x, y))
        assert x.inputs.shape == x.segments.shape == x.task.shape == (2, 128)
    other = PackedBatches(sampler(seed=1), 2, 128)(0)
    assert not torch.equal(other.inputs, a(0).inputs)


def test_a_chunk_packs_the_rows_of_its_range_in_order_until_one_does_not_fit():
    rows = sampler()
    packer = PackedBatches(rows, 4, 128)
    chunk = packer._chunk(1)
    placed = sorted((r.ids.tolist() for seq in chunk for r in seq), key=str)
    n = len(placed)
    drawn = [rows.row(ROWS_PER_CHUNK + k) for k in range(n + 1)]
    assert placed == sorted((r.ids.tolist() for r in drawn[:n]), key=str)  # the first n rows of chunk 1's range
    free = [128 - sum(len(r.ids) - 1 for r in seq) for seq in chunk]
    assert min(free) >= 0 and len(drawn[n].ids) - 1 > max(free)  # row n fits nowhere: the chunk is full
    batch = packer(packer.batches_per_chunk)  # chunk 1's first batch
    assert int((batch.inputs != PAD).sum()) == sum(len(r.ids) - 1 for seq in chunk[:4] for r in seq)


def test_a_fixed_pool_is_packed_from_its_own_rows():
    rows = sampler()
    rows.max_examples = 10  # --max-examples 10
    pool = {tuple(rows._fresh_row(i).ids.tolist()) for i in range(10)}
    packed = PackedBatches(rows, 2, 128)
    seen = {tuple(r.ids.tolist()) for c in range(3) for seq in packed._chunk(c) for r in seq}
    assert seen <= pool and len(seen) > 1


def test_packed_pair_run_resumes_exactly(tiny_train_config):
    pair = dict(layout="pair", pack=True, model=replace(TINY, rope="3d"), batch_size=2)
    a = train(tiny_train_config("a", max_steps=6, save_every=3, **pair))
    train(tiny_train_config("b", max_steps=6, save_every=3, stop_at_step=3, **pair))
    b = train(tiny_train_config("b", max_steps=6, save_every=3, **pair), resume=True)
    weights_a, weights_b = (load_file(str(checkpoint_dir(run) / "model.safetensors")) for run in (a, b))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert load_train_state(a)["step"] == load_train_state(b)["step"] == 6


def test_ahead_gives_each_step_its_own_result_in_order():
    calls = []

    def fn(step):
        calls.append(step)
        if step == 4:
            raise ValueError("step 4")
        return step * 10

    with Ahead(fn, 6) as ahead:
        assert [ahead(s) for s in (2, 3)] == [20, 30]
        with pytest.raises(ValueError, match="step 4"):
            ahead(4)
    assert calls == [2, 3, 4]


def test_precision_auto_follows_the_measured_matmul_speeds(monkeypatch, capsys):
    cpu = torch.device("cpu")
    for fp32, bf16, expected in [(40e9, 1e9, None), (148e9, 440e9, torch.bfloat16)]:
        runtime.auto_precision.cache_clear()
        monkeypatch.setattr(runtime, "matmul_speeds", lambda device: (fp32, bf16))
        assert runtime.autocast_dtype(cpu, "auto") == expected
        assert f"bf16 {bf16 / 1e9:,.1f} GFLOP/s, fp32 {fp32 / 1e9:,.1f} GFLOP/s" in capsys.readouterr().out
    assert runtime.autocast_dtype(cpu, "fp32") is None and runtime.autocast_dtype(cpu, "bf16") == torch.bfloat16
    runtime.auto_precision.cache_clear()
