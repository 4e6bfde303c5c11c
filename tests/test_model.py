"""arc.model.transformer: shapes, causality, grid positions, and the KV cache computing exactly what the full
forward computes (every cache test runs with and without grid position embeddings)."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY

from arc.data.tokenizer import PAD, ROW, GridTokenizer
from arc.inference.decode import left_pad
from arc.model.config import ModelConfig
from arc.model.positions import GRID_INDEXES, grid_positions
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")


# Llama 3.x's RoPE scaling, with an original context short enough that the tiny model's positions feel it
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
VARIANTS = {
    "llama": {},
    "grid_positions": {"grid_positions": True},
    # grouped-query attention (2 key/value heads for 4 query heads), heads wider than d_model / n_heads
    "gqa_llama3": {"n_kv_heads": 2, "head_size": 16, "rope_scaling": LLAMA3},
}


@pytest.fixture(params=list(VARIANTS.values()), ids=list(VARIANTS))
def tiny_model(request) -> Transformer:
    torch.manual_seed(0)
    return Transformer(replace(TINY, **request.param)).eval()

TOL = dict(atol=1e-5, rtol=1e-5)


def random_tokens(*shape, seed=0) -> torch.Tensor:
    return torch.randint(0, 15, shape, generator=torch.Generator().manual_seed(seed))  # no PAD


def test_output_shape_and_dtype(tiny_model):
    logits = tiny_model(random_tokens(3, 17))
    assert logits.shape == (3, 17, 16)
    assert logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tiny_model(random_tokens(1, 5)).dtype == torch.float32  # fp32 logits under autocast too


def test_config_defaults():
    cfg = ModelConfig(d_model=96, n_heads=4)
    assert (cfg.head_dim, cfg.mlp_width) == (24, 256)  # 8/3 * 96 = 256, already a multiple of 64
    assert ModelConfig(d_model=32, mlp_hidden=50).mlp_width == 50


def test_causal(tiny_model):
    tokens = random_tokens(2, 20)
    changed = tokens.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 15
    a, b = tiny_model(tokens), tiny_model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-4)  # the change is visible from position 12 on


def test_cached_decoding_equals_full_forward(tiny_model):
    tokens = random_tokens(2, 18)
    full = tiny_model(tokens)
    cache = tiny_model.new_cache(2, capacity=18)
    steps = [tiny_model(tokens[:, :10], cache=cache)]  # prefill
    for t in range(10, 18):  # then one token at a time
        steps.append(tiny_model(tokens[:, t : t + 1], cache=cache))
    assert cache.length == 18
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_left_padded_batch_equals_each_prompt_alone(tiny_model):
    prompts = [random_tokens(n, seed=n).tolist() for n in (5, 12, 9)]
    continuations = random_tokens(3, 4, seed=99)
    tokens, pad = left_pad(prompts, PAD)
    assert pad.tolist() == [7, 0, 3]
    cache = tiny_model.new_cache(3, capacity=16, pad=pad)
    prefill = tiny_model(tokens, cache=cache)
    steps = [tiny_model(continuations[:, t : t + 1], cache=cache) for t in range(4)]
    for b, prompt in enumerate(prompts):
        alone = tiny_model(torch.tensor([prompt + continuations[b].tolist()]))[0]
        n = len(prompt)
        torch.testing.assert_close(prefill[b, pad[b]:], alone[:n], **TOL)
        torch.testing.assert_close(torch.cat([s[b] for s in steps]), alone[n:], **TOL)
    assert torch.isfinite(prefill).all()  # padding queries attend to themselves: no NaN


def test_cache_truncation_then_redecoding(tiny_model):
    prompt, first, second = random_tokens(1, 12), random_tokens(1, 4, seed=1), random_tokens(1, 4, seed=2)
    cache = tiny_model.new_cache(1, capacity=20)
    tiny_model(prompt, cache=cache)
    tiny_model(first, cache=cache)
    assert cache.length == 16
    cache.length = 12  # back to the end of the prompt: forget `first`
    redo = tiny_model(second, cache=cache)
    full = tiny_model(torch.cat([prompt, second], dim=1))
    torch.testing.assert_close(redo, full[:, 12:], **TOL)
    # and one token at a time after a truncation to the middle of the prompt
    cache.length = 7
    steps = torch.cat([tiny_model(second[:, t : t + 1], cache=cache) for t in range(4)], dim=1)
    torch.testing.assert_close(steps, tiny_model(torch.cat([prompt[:, :7], second], dim=1))[:, 7:], **TOL)


def test_cache_overflow_raises(tiny_model):
    cache = tiny_model.new_cache(1, capacity=10)
    tiny_model(random_tokens(1, 8), cache=cache)
    with pytest.raises(ValueError, match="cache overflow"):
        tiny_model(random_tokens(1, 3), cache=cache)
    assert cache.length == 8  # the failed call changed nothing
    tiny_model(random_tokens(1, 2), cache=cache)  # exactly full is fine
    assert cache.length == 10


def test_sequence_longer_than_max_len_raises():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, max_seq_len=8, rope="1d"))
    assert model(random_tokens(1, 8)).shape == (1, 8, 16)
    with pytest.raises(ValueError, match="exceeds max_seq_len 8"):
        model(random_tokens(1, 9))


def test_residual_output_init_is_scaled_by_depth(tiny_model):
    std = 0.02 / (2 * TINY.n_layers) ** 0.5
    for block in tiny_model.blocks:
        assert abs(block.attn.wo.weight.std().item() - std) < 0.25 * std
        assert abs(block.attn.wq.weight.std().item() - 0.02) < 0.25 * 0.02


def test_padded_prompt_fed_one_token_at_a_time_equals_prefill(tiny_model):
    """Padding queries (slots before a row's first real token) see only themselves: no NaN, and the real
    positions get what one prefill of the whole padded batch gives."""
    tokens, pad = left_pad([random_tokens(9).tolist(), random_tokens(4, seed=1).tolist()], PAD)
    whole = tiny_model(tokens, cache=tiny_model.new_cache(2, capacity=9, pad=pad))
    cache = tiny_model.new_cache(2, capacity=9, pad=pad)
    steps = torch.cat([tiny_model(tokens[:, t : t + 1], cache=cache) for t in range(9)], dim=1)
    assert torch.isfinite(steps).all()
    torch.testing.assert_close(steps[0], whole[0], **TOL)
    torch.testing.assert_close(steps[1, pad[1]:], whole[1, pad[1]:], **TOL)


def test_decode_step_equals_forward(tiny_model):
    """decode_step (fixed shapes: attends over the whole cache, the slot a tensor) computes what
    forward(tokens, cache) computes, on a left-padded batch; slots not yet filled are never seen."""
    tokens, pad = left_pad([random_tokens(5).tolist(), random_tokens(11, seed=1).tolist()], PAD)
    new = random_tokens(2, 6, seed=2)
    ref, fixed = (tiny_model.new_cache(2, capacity=20, pad=pad) for _ in range(2))
    tiny_model(tokens, cache=ref)
    tiny_model(tokens, cache=fixed)
    for layer in range(TINY.n_layers):  # junk where nothing was written yet: masking must hide it
        fixed.k[layer][:, :, 11:] = 1e4
        fixed.v[layer][:, :, 11:] = -1e4
    at = torch.tensor([fixed.length])
    for t in range(6):
        expected = tiny_model(new[:, t : t + 1], cache=ref)[:, -1]
        got = tiny_model.decode_step(new[:, t : t + 1], fixed, at)
        at += 1
        fixed.length += 1
        torch.testing.assert_close(got, expected, **TOL)
    for layer in range(TINY.n_layers):
        torch.testing.assert_close(fixed.k[layer][:, :, :17], ref.k[layer][:, :, :17], **TOL)


def sequential_grid_positions(tokens: list[int], row: int = 0, col: int = 0):
    """grid_positions' rule, one token at a time (the reference for the vectorised version): each
    token's row and column indexes and the (row, col) state it leaves behind."""
    rows, cols, afters = [], [], []
    for t in tokens:
        if t > ROW:  # a marker: index 0, and the next grid starts at its first cell
            rows.append(0), cols.append(0)
            row, col = 0, 0
        else:
            rows.append(min(row + 1, GRID_INDEXES - 1)), cols.append(min(col + 1, GRID_INDEXES - 1))
            row, col = (row + 1, 0) if t == ROW else (row, col + 1)
        afters.append([row, col])
    return rows, cols, afters


def test_grid_positions_known_answer():
    """B I 12/34 O 5 E: every cell gets its 1-based (row, col), a row end the column after its row."""
    ids = GridTokenizer().encode_text("BI12\n34\nO5\nE")
    row, col, state = grid_positions(torch.tensor([ids]), torch.zeros(1, 2, dtype=torch.long))
    #                         B  I  1  2  \n 3  4  \n O  5  \n E
    assert row[0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 1, 0]
    assert col[0].tolist() == [0, 0, 1, 2, 3, 1, 2, 3, 0, 1, 2, 0]
    assert state[0, 3].tolist() == [0, 2] and state[0, 4].tolist() == [1, 0]  # after '2', after the row end
    assert state[0, -1].tolist() == [0, 0]  # after E: the next grid starts afresh


def test_grid_positions_equal_the_sequential_rule_from_any_state():
    rng = np.random.default_rng(0)
    weights = np.array([1.0] * 10 + [3.0, 0.5, 0.5, 0.2, 0.3, 0.3])  # mostly cells and row ends
    for trial in range(200):
        T = int(rng.integers(1, 80))
        tokens = rng.choice(16, size=(2, T), p=weights / weights.sum())
        start = rng.integers(0, 40, size=(2, 2))  # includes rows/columns past 30: clamped to index 31
        row, col, state = grid_positions(torch.tensor(tokens), torch.tensor(start))
        for b in range(2):
            rows, cols, after = sequential_grid_positions(tokens[b].tolist(), *start[b].tolist())
            assert (row[b].tolist(), col[b].tolist(), state[b].tolist()) == (rows, cols, after), trial


def test_grid_position_embeddings_are_all_that_differs():
    """A grid-position model with the plain model's weights and zero row/column embeddings computes
    exactly the plain model's logits; non-zero ones change them."""
    torch.manual_seed(0)
    plain = Transformer(TINY)
    gridded = Transformer(replace(TINY, grid_positions=True))
    assert gridded.num_params() == plain.num_params() + 2 * GRID_INDEXES * TINY.d_model
    missing = gridded.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["embed_col.weight", "embed_row.weight"]
    tokens = random_tokens(1, 20)
    with torch.no_grad():
        gridded.embed_row.weight.zero_(), gridded.embed_col.weight.zero_()
        torch.testing.assert_close(gridded(tokens), plain(tokens), atol=0, rtol=0)
        gridded.embed_col.weight.normal_()
        assert not torch.allclose(gridded(tokens), plain(tokens))


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """A GQA model computes what a plain multi-head model computes when each of its key/value heads is
    repeated for the query heads of its group (query head h reads key/value head h // group)."""
    torch.manual_seed(0)
    grouped = Transformer(replace(TINY, n_kv_heads=2)).eval()
    plain = Transformer(TINY).eval()
    state, D = grouped.state_dict(), TINY.head_dim
    for name, value in state.items():
        if name.endswith(("wk.weight", "wv.weight")):  # (2 * D, C) -> (4 * D, C): heads 0, 0, 1, 1
            state[name] = value.view(2, D, -1).repeat_interleave(2, dim=0).reshape(4 * D, -1)
    plain.load_state_dict(state)
    assert grouped.blocks[0].attn.wk.weight.shape == (2 * D, TINY.d_model)
    tokens = random_tokens(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(grouped(tokens), plain(tokens), **TOL)
        cache = grouped.new_cache(2, capacity=31)
        assert cache.k[0].shape == (2, 2, 31, D)  # the cache holds the key/value heads only
        grouped(tokens, cache=cache)
        step = grouped(random_tokens(2, 1, seed=3), cache=cache)
        torch.testing.assert_close(step, plain(torch.cat([tokens, random_tokens(2, 1, seed=3)], 1))[:, -1:], **TOL)


def test_llama3_rope_scaling_known_answer():
    """High frequencies (wavelength under original / high_freq_factor) are kept, low ones (over
    original / low_freq_factor) divided by factor, the ones between interpolated."""
    from arc.model.rope import llama3_frequencies

    freqs = 2 * torch.pi / torch.tensor([4.0, 16.0, 24.0, 64.0])  # wavelengths; original 32: bounds 8 and 32
    scaled = llama3_frequencies(freqs, LLAMA3)
    smooth = [(32 / wavelength - 1) / (4 - 1) for wavelength in (16, 24)]  # 1/3 and 1/9 of the way to unscaled
    expected = [freqs[0], *((1 - a) * f / 8 + a * f for a, f in zip(smooth, freqs[1:3])), freqs[3] / 8]
    torch.testing.assert_close(scaled, torch.stack(expected))
    plain = Transformer(TINY).rope_cos
    assert not torch.equal(Transformer(replace(TINY, rope_scaling=LLAMA3)).rope_cos, plain)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_model):
    tokens = random_tokens(2, 24)

    def gradients(checkpointing: bool) -> tuple[float, dict]:
        tiny_model.zero_grad(set_to_none=True)
        tiny_model.train()
        tiny_model.activation_checkpointing = checkpointing
        loss = tiny_model(tokens[:, :-1]).log_softmax(-1).gather(-1, tokens[:, 1:, None]).mean()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in tiny_model.named_parameters()}

    loss, grads = gradients(False)
    loss_ckpt, grads_ckpt = gradients(True)
    assert loss == loss_ckpt
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-7, rtol=1e-5, msg=name)
