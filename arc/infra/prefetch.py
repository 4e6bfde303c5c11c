"""Working one step ahead: a function of the step number, evaluated for the next step in a background thread
while the caller works on this one.

The trainer builds each step's batches this way (drawing, augmenting and packing rows is Python, tens
of milliseconds a step): while the main thread runs a step's forward and backward, whose kernels
release the GIL, the next step's batches are built beside it, and the step after that never waits for
them. The function must be pure in the step number (the trainer's batches are: rows are a function
of (seed, index)), so building a step's batches ahead or on time gives the same batches. One worker
thread: the function is never called twice at once, and the calls come in step order.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Ahead(Generic[T]):
    """ahead(step) == fn(step), with fn(step + 1) started in the background as soon as fn(step) is handed
    out (unless step + 1 is `until` or past it; until None: steps without a known end, such as a
    --minutes run's, whose last step builds one batch that is never used). `waited` is the time callers
    spent waiting for a result."""

    def __init__(self, fn: Callable[[int], T], until: int | None):
        self.fn, self.until, self.waited = fn, until, 0.0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")
        self.pending: dict[int, Future] = {}

    def __call__(self, step: int) -> T:
        future = self.pending.pop(step, None) or self.pool.submit(self.fn, step)
        began = time.perf_counter()
        result = future.result()  # re-raises what fn raised
        self.waited += time.perf_counter() - began
        if self.until is None or step + 1 < self.until:
            self.pending[step + 1] = self.pool.submit(self.fn, step + 1)
        return result

    def __enter__(self) -> "Ahead[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
