"""Run one function over many items on every usable core, results in input order.

Decoding JPEGs is most of what the data stages and ``predict`` do with 25,000 photos, and
Pillow releases the GIL while it decodes, resizes and hashes (hashlib does too), so a pool
of threads sized to the cores spreads that work without processes to start, data to
pickle, or fork hazards beside torch. Results come back in the order of the input, so an
output never depends on which thread finished first.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Items in flight per thread: enough to keep every thread busy, bounded so that a slow
# consumer (a forward pass) never lets decoded images pile up without limit.
IN_FLIGHT_PER_THREAD = 64


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(function: Callable[[T], R], items: Sequence[T] | Iterable[T], threads: int | None = None) -> Iterator[R]:
    """``map(function, items)`` on ``threads`` threads (default: the usable cores), in input order.

    An exception raised by ``function`` propagates when its item's turn comes; wrap the
    function to collect errors per item instead.
    """
    threads = threads or usable_cores()
    if threads == 1:
        yield from map(function, items)
        return
    iterator = iter(items)
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future[R]] = deque()
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= threads * IN_FLIGHT_PER_THREAD:
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(function, item))
                break
            yield result
