"""Running a batch of independent images through a network: chunks, and CPU workers for the chunks.

Multi-mask inference and R^3 produce many independent images (k branches x T copies x sub-images).
How they are scheduled decides the speed, and the best schedule differs by device (``scripts/bench_speed.py
--schedules`` compares them):

* accelerators: everything in one forward (``chunk_size`` only bounds memory);
* CPU: one big forward is *slower* than a loop of single forwards (large activations miss the caches
  and glibc returns buffers above its mmap threshold to the OS after each forward), and the intra-op
  threads of one small-width forward scale poorly. So CPU inference runs chunks of about
  ``CPU_PIXELS_PER_FORWARD`` pixels, several chunks at a time, one per worker thread, each worker
  with its share of the torch threads. The chunks are independent, so the workers never wait for
  each other; the result is the same as running the chunks one after another.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

# Automatic chunk on CPU (inference only): at most this many pixels per network forward, at least
# one image. On CPU (small NAFNet/DnCNN) one forward over all k branches and R^3 copies of an image was
# slower than one image per forward, at 512x512 and still at 128x128.
CPU_PIXELS_PER_FORWARD = 128 * 128
# Automatic workers on CPU: one per torch thread, at most this many (each holds one chunk's activations).
CPU_MAX_WORKERS = 8


def _cpu_inference(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and not torch.is_grad_enabled()


def resolve_chunk(chunk_size: int | None, x: torch.Tensor) -> int:
    """Images per forward for images like x: ``chunk_size`` if given (0 = no limit). None = automatic:
    no limit when training (grad enabled) or on accelerators; on CPU ``CPU_PIXELS_PER_FORWARD`` pixels,
    at least one image."""
    if chunk_size is not None:
        return chunk_size
    return max(1, CPU_PIXELS_PER_FORWARD // (x.shape[-2] * x.shape[-1])) if _cpu_inference(x) else 0


def resolve_workers(workers: int | None, x: torch.Tensor) -> int:
    """Chunks run at the same time: ``workers`` if given; None = automatic: on CPU without grad,
    one per torch thread (``torch.get_num_threads()``, at most ``CPU_MAX_WORKERS``); else 1
    (accelerators, training)."""
    if workers is not None:
        return workers
    return min(torch.get_num_threads(), CPU_MAX_WORKERS) if _cpu_inference(x) else 1


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per size and process (a forked child does not inherit its parent's threads)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="amcfd-chunk")


def run_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  chunk: int | None, workers: int = 1) -> torch.Tensor:
    """fn over the batch of x, at most ``chunk`` images per call (None or 0: one call); with
    ``workers`` > 1 that many calls run at once in threads, each with ``get_num_threads() // workers``
    torch threads. The output is concatenated in order."""
    if not chunk or chunk >= x.shape[0]:
        return fn(x)
    parts = x.split(int(chunk))
    workers = min(workers, len(parts))
    if workers <= 1:
        return torch.cat([fn(part) for part in parts])
    total = torch.get_num_threads()
    per_worker = max(1, total // workers)
    # grad / inference / autocast modes are thread-local: the caller's are re-entered in each worker
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    autocast, autocast_dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def call(part: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(per_worker)             # OpenMP/MKL thread counts are per calling thread
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast):
            return fn(part)
    try:
        return torch.cat(list(_pool(workers, os.getpid()).map(call, parts)))
    finally:
        torch.set_num_threads(total)                  # restore the default new threads start with
