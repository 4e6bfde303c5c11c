"""Data-parallel training (arc.infra.distributed) with two gloo processes on CPU, started the way torchrun
starts them (RANK, WORLD_SIZE, ... in the environment): after a few steps both ranks hold the same
weights, equal to one process trained on the combined batch; a run stopped and resumed under two ranks
equals an uninterrupted one. One pair of processes runs every two-rank case (starting them is most of
the cost)."""
import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY
from safetensors.torch import load_file

from arc.infra import distributed
from arc.infra.distributed import SINGLE, World
from arc.model.checkpoint import checkpoint_dir, load_train_state, read_config
from arc.model.transformer import Transformer
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

RANKS, STEPS, GRAD_ACCUM = 2, 4, 2


def test_ranks_share_out_the_rows_of_one_process_with_more_accumulation():
    """W ranks with grad_accum A draw, between them, exactly the micro-batches one process draws with
    grad_accum W * A, step by step."""
    for step in range(3):
        shares = [World(rank=r, size=RANKS).micro_batches(step, GRAD_ACCUM) for r in range(RANKS)]
        assert [i for share in shares for i in share] == list(SINGLE.micro_batches(step, RANKS * GRAD_ACCUM))
    assert list(World(rank=1, size=2).micro_batches(3, 2)) == [14, 15]
    assert list(SINGLE.micro_batches(3, 1)) == [3]  # without torchrun: the single-process indexes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_rank_worker(rank: int, port: int, full, stopped) -> None:
    """One rank: the environment torchrun would give it, then three runs: uninterrupted, stopped half-way,
    resumed. Then the weight check must catch a rank that diverged."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(full)  # ends with World.same_weights: raises if the ranks' weights differ
        train(stopped)
        train(replace(stopped, stop_at_step=None), resume=True)
        world, _ = distributed.setup(torch.device("cpu"))
        assert world.launched and world.rank == rank and world.size == RANKS
        torch.manual_seed(0)
        model = Transformer(TINY)
        assert world.same_weights(model)
        with torch.no_grad():
            model.head.weight[0, 0] += rank  # rank 1 diverges
        assert not world.same_weights(model)
    finally:
        distributed.close()


def weights(folder) -> dict:
    return load_file(str(checkpoint_dir(folder) / "model.safetensors"))


def test_two_ranks_train_as_one_process_on_the_combined_batch(tiny_train_config):
    # the pair layout: task and transform embeddings (does DDP see a gradient for every parameter?)
    make = lambda out, **kw: tiny_train_config(out, **{"layout": "pair", "max_steps": STEPS, "save_every": 2, **kw})  # noqa: E731
    full, stopped = make("ddp", grad_accum=GRAD_ACCUM), make("ddp_resumed", grad_accum=GRAD_ACCUM, stop_at_step=2)
    mp.start_processes(two_rank_worker, args=(free_port(), full, stopped), nprocs=RANKS, start_method="fork")
    single = train(make("single", grad_accum=RANKS * GRAD_ACCUM))  # one process, the combined batch

    ddp, one = weights(full.out), weights(single)
    assert ddp.keys() == one.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], one[name], atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(ddp["embed.weight"], weights(train(make("untrained", max_steps=0)))["embed.weight"])
    config = read_config(full.out)
    assert config["step"] == STEPS and len(load_train_state(full.out)["torch_rng_ranks"]) == RANKS
    assert config["metrics"]["eval_loss"] == pytest.approx(read_config(single)["metrics"]["eval_loss"], abs=1e-6)

    # stopped at step 2 and resumed under two ranks: bit for bit the uninterrupted two-rank run
    resumed = weights(stopped.out)
    assert all(torch.equal(resumed[name], ddp[name]) for name in ddp)
    assert read_config(stopped.out)["metrics"] == config["metrics"]
