"""The indexer's decode pipeline: order, equality with a plain loop, the model thread helping, early stop."""

from __future__ import annotations

import threading
import time

import pytest

from zscir.index.prefetch import prefetched_batches


def _load_slowly(seen: list):
    def load(job: int) -> int:
        seen.append((job, threading.current_thread() is threading.main_thread()))
        time.sleep(0.01)
        return job * job
    return load


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_in_order_and_equal_to_a_plain_loop(workers):
    jobs = list(range(23))
    out = list(prefetched_batches(jobs, lambda j: j * j, 5, workers))
    assert [list(c) for c, _ in out] == [jobs[i:i + 5] for i in range(0, 23, 5)]
    assert [r for _, res in out for r in res] == [j * j for j in jobs]


def test_the_calling_thread_decodes_what_the_pool_has_not_started():
    """The first batch: the pool's one thread takes jobs from the front, the caller from the back, so the
    caller never just waits; every job is loaded exactly once."""
    seen: list = []
    batches = prefetched_batches(list(range(8)), _load_slowly(seen), 8, 1)
    chunk, res = next(batches)
    assert res == [j * j for j in range(8)]
    first = [j for j, main in seen if j < 8]
    assert sorted(first) == list(range(8))  # each job once
    by_main = {j for j, main in seen if main}
    assert by_main and 7 in by_main and 0 not in by_main  # the caller took the back, the pool the front
    batches.close()


def test_closing_early_cancels_the_queued_batch():
    seen: list = []
    batches = prefetched_batches(list(range(100)), _load_slowly(seen), 10, 1)
    next(batches)  # batch 0 loaded, batch 1 queued
    batches.close()
    time.sleep(0.15)
    assert len(seen) < 25  # batch 1 at most partly, nothing after it
