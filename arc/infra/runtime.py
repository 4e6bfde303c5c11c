"""Where and in what precision to run: device choice and whether bf16 autocast pays off.

bf16 autocast is used on CUDA, and on CPUs with AMX (Intel Sapphire Rapids and later), whose tile
units make bf16 matmuls several times faster than fp32. On other CPUs bf16 matmuls are emulated and
far slower than fp32 (RESULTS.md, "The hardware's own limits"), so there we stay in fp32.

`available_memory` says how much memory a device has free, so a model too large for it is refused by
name before it is built (arc.model.schema) rather than by the allocator halfway through.
"""
from __future__ import annotations

import functools
import os
import random
from contextlib import nullcontext

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


@functools.cache
def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32. precision: auto | bf16 | fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_amx() else None


def autocast(device_type: str, dtype: torch.dtype | None):
    """A context running its body under autocast to dtype on device_type ("cpu", "cuda"); with
    dtype None, a context that changes nothing (plain fp32)."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """torch.compile the model for training (fuses RoPE, RMSNorm and SwiGLU's elementwise work), with
    dynamic shapes so batches of any length reuse one graph. It pays most with several threads on a
    busy machine, where eager's many small parallel ops suffer most (RESULTS.md). A warm-up
    forward/backward on a tiny batch proves it works on this machine's toolchain; on failure we fall
    back to eager with a message."""
    if not enabled:
        return model
    compiled = torch.compile(model, dynamic=True)
    device = next(model.parameters()).device
    try:
        zeros = torch.zeros(2, dtype=torch.long, device=device)
        compiled(torch.zeros(2, 16, dtype=torch.long, device=device), task=zeros, transform=zeros).sum().backward()
    except Exception as error:  # noqa: BLE001 - any compiler failure means: use eager
        print(f"torch.compile failed ({type(error).__name__}: {error}); training in eager mode")
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
