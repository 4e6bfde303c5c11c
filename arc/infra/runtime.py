"""Where and in what precision to run: device choice and whether bf16 autocast pays off.

`available_memory` says how much memory a device has free, so a model too large for it is refused by
name before it is built (arc.model.schema) rather than by the allocator halfway through.

`--precision auto` measures instead of guessing from the CPU's name: a fraction of a second of fp32 and
bf16 matmuls at start-up (once per process), and bf16 autocast where bf16 is the faster of the two. That
is bf16 on GPUs and on CPUs with native bf16 units (AMX, AVX512_BF16: 440 vs 148 GFLOP/s on one
development machine), fp32 on CPUs that emulate bf16 (about 1 vs 40 GFLOP/s on another: RESULTS.md,
"The hardware's own limits"). Autocast keeps fp32 master weights and optimiser state; only the matmuls
(and attention) run in bf16.
"""
from __future__ import annotations

import functools
import os
import random
import time
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from arc.infra.errors import ConfigError


def resolve_device(name: str = "auto", threads: int = 0) -> torch.device:
    """The torch device for `name`; threads > 0 sets torch's CPU thread count. On a shared machine
    one thread per process is far better than several: with another busy process, the threads of
    each parallel op wait on each other at every barrier (RESULTS.md, "Figures behind the code's
    defaults")."""
    if threads > 0:
        torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: torch sees no CUDA device here (use --device cpu, or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still allocate: on CUDA the free memory of the GPU (torch.cuda.mem_get_info);
    on a CPU MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim), else the free
    physical pages. None when the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


# The start-up measurement: square matmuls of this size (2 * 256^3 = 34 MFLOP each), each dtype timed for
# at least MATMUL_SECONDS after one warm-up (and at least 3 of them); an emulated bf16 matmul takes ~30 ms.
MATMUL_SIZE = 256
MATMUL_SECONDS = 0.05


def matmul_flops(dtype: torch.dtype, device: torch.device, n: int = MATMUL_SIZE,
                 seconds: float = MATMUL_SECONDS) -> float:
    """FLOP/s of an n x n x n matmul in dtype on device, with torch's current threads: from the fastest
    of the timed matmuls, not their mean, because another process on the same cores (a second run, a test
    suite) stalls some of them; the fastest is what the hardware does (two runs sharing 2 cores picked
    fp32 on a machine with native bf16 when the mean decided)."""
    generator = torch.Generator(device).manual_seed(0)  # its own: the run's random state stays untouched
    a, b = (torch.randn(n, n, device=device, generator=generator).to(dtype) for _ in range(2))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up: first-call allocations and kernel choice
    sync()
    fastest, reps, started = float("inf"), 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - started < seconds:
        began = time.perf_counter()
        a @ b
        sync()
        fastest = min(fastest, time.perf_counter() - began)
        reps += 1
    return 2 * n**3 / fastest


@functools.cache
def matmul_speeds(device: torch.device) -> tuple[float, float]:
    """(fp32, bf16) matmul FLOP/s on device, measured once per process (well under a second)."""
    return matmul_flops(torch.float32, device), matmul_flops(torch.bfloat16, device)


def bf16_is_slow(device: torch.device) -> bool:
    """Whether bf16 matmuls run slower than fp32 on device (the start-up measurement: emulated bf16)."""
    fp32, bf16 = matmul_speeds(device)
    return bf16 < fp32


@functools.cache
def auto_precision(device: torch.device) -> torch.dtype | None:
    """bf16 where the start-up measurement finds bf16 matmuls faster than fp32 on device, else None
    (fp32); the choice and its two figures are printed once per process."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        print("precision auto: fp32 (this GPU has no bf16)")
        return None
    fp32, bf16 = matmul_speeds(device)
    chosen = torch.bfloat16 if bf16 > fp32 else None
    print(f"precision auto: {'bf16 autocast' if chosen else 'fp32'} (measured matmuls on {device.type}: "
          f"bf16 {bf16 / 1e9:,.1f} GFLOP/s, fp32 {fp32 / 1e9:,.1f} GFLOP/s)", flush=True)
    return chosen


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32. precision: auto (measured: auto_precision) |
    bf16 | fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return auto_precision(torch.device(device))


def autocast(device_type: str, dtype: torch.dtype | None):
    """A context running its body under autocast to dtype on device_type ("cpu", "cuda"); with
    dtype None, a context that changes nothing (plain fp32)."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


def compile_regions(regions: list[torch.nn.Module], dynamic: bool, warm_up: Callable[[], None]) -> bool:
    """torch.compile each module of `regions` in place, then run warm_up() (a training step's forward and
    backward on a batch of the run's shape), so that the compiling happens now and not inside a timed
    step. Regions with the same code, such as a transformer's blocks, share one compiled graph: only
    one of them costs compile time (torch's "regional compilation"; half the cold compile of the
    whole model here, RESULTS.md). What is not compiled (embeddings, the head) runs eagerly.

    dynamic False: one graph per input shape (packed batches have one shape: one graph for the run);
    True: one graph for every sequence length (padded batches). The torch random state is put back
    after the warm-up, so a run (resumed or not) draws the same random numbers compiled or not. On
    any compiler failure everything runs eagerly from then on (torch.compiler.set_stance), with a
    message; returns whether the regions are compiled."""
    for region in regions:
        region.compile(dynamic=dynamic)
    try:
        with torch.random.fork_rng(devices=[]):
            warm_up()
    except Exception as error:  # noqa: BLE001 - any compiler failure means: use eager
        print(f"torch.compile failed ({type(error).__name__}: {error}); training in eager mode")
        torch.compiler.set_stance("force_eager")
        return False
    return True


def compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process so far."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def eager():
    """A context in which compiled modules run their plain eager code (say, the eval loss on batches of
    another shape than training's, which would otherwise compile a graph of their own)."""
    return torch.compiler.set_stance("force_eager")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
