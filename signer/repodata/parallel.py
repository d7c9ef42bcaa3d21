"""Split index ranges of a big in-memory job over forked worker processes.

The work (parsed repodata, keys) is set as module state *before* forking, so workers
inherit it copy-on-write and only (start, end) ranges and small results cross processes.
Private keys therefore never leave memory: no pickling, no files.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

R = TypeVar("R")

_task: Callable[[int, int], Any] | None = None


def _run(bounds: tuple[int, int]) -> Any:
    assert _task is not None
    return _task(*bounds)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside: bulk loops that build hundreds of thousands of small,
    acyclic containers (a record's signature entries) would otherwise trigger full
    collections over everything alive, about half their time. Reference counting still
    frees what they drop."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_ranges(
    task: Callable[[int, int], R],
    total: int,
    jobs: int,
    chunks_per_job: int = 4,
    on_chunk: Callable[[int], None] | None = None,
) -> list[R]:
    """task(start, end) over [0, total) in chunks, on `jobs` processes; results in order."""
    global _task
    jobs = max(1, min(jobs, total // 2000 + 1))  # forking costs more than a small job
    n_chunks = jobs * chunks_per_job if jobs > 1 else 1
    if on_chunk is not None:
        n_chunks = max(n_chunks, min(64, total // 1000 + 1))
    step = -(-total // n_chunks) if total else 1
    bounds = [(i, min(i + step, total)) for i in range(0, total, step)] or [(0, 0)]
    if jobs == 1:
        results = []
        for start, end in bounds:
            results.append(task(start, end))
            if on_chunk is not None:
                on_chunk(end - start)
        return results
    _task = task
    # Move every object made so far out of the collector's sight: a worker's collections
    # would otherwise walk (and so write to, copying page after page) the inherited data.
    gc.freeze()
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(jobs) as pool:
            results = []
            for (start, end), result in zip(bounds, pool.imap(_run, bounds), strict=True):
                results.append(result)
                if on_chunk is not None:
                    on_chunk(end - start)
            return results
    finally:
        _task = None
        gc.unfreeze()
