"""Decoding the next batch of images while the model encodes this one (the indexer's feeding pipeline).

Why it is built this way
------------------------
Indexing photos on a CPU is bound by the model: a ViT-B/32 at 224 px takes ~85 ms per image on one core,
decoding a 1-12 MP JPEG at reduced scale ~40 ms (docs/PERFORMANCE.md, section 4b). So decoding runs in a
thread pool one batch ahead of the model (PIL and torch release the GIL), with one thread per core the
model leaves free (:func:`default_workers`); more threads than cores only take turns with the model.

The model thread never waits idle for a batch: whatever the pool has not started yet when the model wants
the batch (always the first batch, later ones only when decoding is the slower side) it decodes itself,
from the back of the batch while the pool works from the front. The batches stay the same, so the
embeddings do too.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def default_workers(model_on_cpu: bool = True, max_workers: int = 8) -> int:
    """Decode threads for this process: the cores it may use minus the model's threads, 1 to ``max_workers``.

    Why: decoding a batch of photos costs less than encoding it on the CPU, so one thread per core that the
    model does not use keeps it fed; more threads than cores only take turns with the model's thread
    (docs/PERFORMANCE.md section 4b). A model on an accelerator leaves every core but the feeding thread's
    to decoding.
    """
    from zscir.threads import usable_cores  # affinity and cgroup quota: one owner

    cores = usable_cores()
    import torch  # loaded already: the composers are built

    busy = torch.get_num_threads() if model_on_cpu else 1
    return max(1, min(max_workers, cores - busy))


def prefetched_batches(jobs: Sequence[J], load: Callable[[J], R], batch_size: int,
                       workers: int) -> Iterator[tuple[Sequence[J], list[R]]]:
    """Yield ``(batch of jobs, [load(job) for job in batch])`` in order, loading the next batch meanwhile.

    ``workers`` = 0 loads each batch in the calling thread when it is asked for (no overlap). The pool is
    shut down, with its queued jobs cancelled, when the caller stops early.
    """
    if workers <= 0:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            yield chunk, [load(j) for j in chunk]
        return
    pool = ThreadPoolExecutor(workers)

    def submit(start: int) -> list[Future] | None:
        if start >= len(jobs):
            return None
        return [pool.submit(load, j) for j in jobs[start:start + batch_size]]

    def collect(futures: list[Future], chunk: Sequence[J]) -> list[R]:
        # jobs the pool has not started are decoded here, from the back, instead of waiting for them
        done: list[tuple[R] | None] = [None] * len(futures)
        for i in reversed(range(len(futures))):
            if futures[i].cancel():
                done[i] = (load(chunk[i]),)
        return [f.result() if d is None else d[0] for f, d in zip(futures, done)]

    try:
        pending = submit(0)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            assert pending is not None
            loaded = collect(pending, chunk)
            pending = submit(start + batch_size)
            yield chunk, loaded
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
