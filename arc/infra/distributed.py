"""Data-parallel training across processes (torchrun): which rank this process is, how a step's rows
are shared out among the ranks, and the few collectives the training loop needs.

`torchrun --nproc_per_node=N train.py ...` starts N copies of train.py with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment; `setup` joins them into one process
group (nccl on CUDA, gloo on CPU) and the trainer wraps its forward in DistributedDataParallel,
nanoGPT-style. A plain `python train.py` has none of those variables and gets SINGLE, a world of one
whose collectives give back their input and which wraps nothing, so its arithmetic is unchanged.

What makes W ranks train exactly as one process would (tests/test_distributed.py):
    rows         a step is W * grad_accum micro-batches, global micro-batch indexes s*W*A .. s*W*A + W*A - 1
                 (A = grad_accum); rank r takes r*A .. r*A + A - 1 of them. So W ranks draw the rows one
                 process draws with grad_accum W*A, and --resume with another W keeps the data order as
                 long as W * grad_accum is the same.
    loss         summed over target tokens and divided by the target count of the whole global batch
                 (all-reduced), then multiplied by W, because DDP averages gradients over the ranks: the
                 step's gradient is the mean per output token over the global batch, as with one process.
    bookkeeping  rank 0 alone evaluates, logs and writes checkpoints; every rank reads them on --resume
                 (so across nodes the run folder must be on a shared filesystem).
"""
from __future__ import annotations

import inspect
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# How long a collective waits for the other ranks. Rank 0 evaluates and saves while the others wait at
# the next step's first collective: a whole-set eval loss or a 1B-parameter save must fit in it.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (a world of one without torchrun)."""

    rank: int = 0  # this process's rank, 0 .. size - 1 (rank 0 evaluates, logs and saves)
    size: int = 1  # number of processes training together
    local_rank: int = 0  # rank on this node: its GPU is cuda:local_rank
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run (nccl: the GPU)
    launched: bool = False  # started by torchrun: a process group exists and the forward is wrapped in DDP

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def micro_batches(self, step: int, grad_accum: int) -> range:
        """The global micro-batch indexes this rank trains on at `step` (see the module docstring)."""
        first = (step * self.size + self.rank) * grad_accum
        return range(first, first + grad_accum)

    def sum(self, value: int | float) -> int | float:
        """value summed over the ranks (ints exactly, floats in float64)."""
        if not self.launched:
            return value
        dtype = torch.int64 if isinstance(value, int) else torch.float64
        tensor = torch.tensor(value, dtype=dtype, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item()

    def gather(self, obj) -> list:
        """Every rank's obj, in rank order, on every rank."""
        if not self.launched:
            return [obj]
        objects = [None] * self.size
        dist.all_gather_object(objects, obj)
        return objects

    def barrier(self) -> None:
        if self.launched:  # nccl: name this rank's GPU, or it guesses (and warns)
            dist.barrier(device_ids=[self.device.index]) if self.device.type == "cuda" else dist.barrier()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """module in DistributedDataParallel (which averages gradients over the ranks in backward), or
        module itself in a world of one. DDP broadcasts rank 0's parameters on construction, so every
        rank starts from the same weights. Every trained parameter is used by every forward (the task
        table is one embedding), so DDP needs no search for unused parameters; the buffers (RoPE tables)
        are the same everywhere, so they are not broadcast at each forward either."""
        if not self.launched:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # torch 2.13 renamed broadcast_buffers (and warns about the old name); older versions lack the new one
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)

    def deferred_sync(self, module: torch.nn.Module, last: bool):
        """Around the forward and backward of one micro-batch: before the last one, DDP's gradient
        all-reduce is skipped (no_sync), so a step all-reduces once, the accumulated gradients."""
        return module.no_sync() if isinstance(module, DistributedDataParallel) and not last else nullcontext()

    def same_weights(self, module: torch.nn.Module) -> bool:
        """Whether every rank holds rank 0's parameters bit for bit. DDP keeps them equal by construction
        (the same all-reduced gradients, the same optimiser step); a difference means a rank diverged."""
        if not self.launched:
            return True
        differs = 0
        for p in module.parameters():
            theirs = p.detach().clone()
            dist.broadcast(theirs, src=0)
            differs += int(not torch.equal(theirs, p.detach()))
        return self.sum(differs) == 0


SINGLE = World()


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), before any process group exists."""
    return int(os.environ.get("RANK", 0))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """The world this process belongs to, and its device: under torchrun, CUDA means cuda:LOCAL_RANK
    (one GPU per process) and the process group is joined here (once per process); without torchrun,
    SINGLE and `device` unchanged."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE, device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return World(rank, size, local_rank, device, launched=True), device


def close() -> None:
    """Leave the process group (at the end of train.py), if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
