import os
import threading
import time

import pytest

from lifecycle.core.parallel import IN_FLIGHT_PER_THREAD, ordered_map, usable_cores


def test_results_come_back_in_input_order_whatever_finishes_first():
    def slow_for_small(n):
        time.sleep(0.002 * (20 - n % 20))
        return n * n
    assert list(ordered_map(slow_for_small, range(100), threads=4)) == [n * n for n in range(100)]


def test_work_is_spread_over_exactly_the_threads_asked_for():
    names = set()
    together = threading.Barrier(3, timeout=10)  # passes only once 3 items run at the same time

    def record(n):
        names.add(threading.get_ident())
        if n < 3:
            together.wait()
        return n
    assert list(ordered_map(record, range(40), threads=3)) == list(range(40))
    assert len(names) == 3 and threading.get_ident() not in names


def test_an_error_is_raised_at_its_item():
    def fail_on_seven(n):
        if n == 7:
            raise ValueError("seven")
        return n
    results = ordered_map(fail_on_seven, range(20), threads=2)
    assert [next(results) for _ in range(7)] == list(range(7))
    with pytest.raises(ValueError, match="seven"):
        next(results)


def test_items_in_flight_are_bounded():
    drawn = []

    def items():  # the input, drawn lazily: what has been drawn is all that can have been started
        for n in range(10_000):
            drawn.append(n)
            yield n
    results = ordered_map(lambda n: n, items(), threads=2)
    assert next(results) == 0
    assert len(drawn) == 2 * IN_FLIGHT_PER_THREAD + 1     # the window, and one more for the result taken
    assert [next(results) for _ in range(10)] == list(range(1, 11))
    assert len(drawn) == 2 * IN_FLIGHT_PER_THREAD + 11    # one drawn per result taken


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_default_is_one_thread_per_core_this_process_may_use():
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert usable_cores() == 1
        caller = threading.get_ident()
        assert list(ordered_map(lambda n: threading.get_ident() == caller, range(3))) == [True] * 3  # plain map
        if len(allowed) >= 2:
            os.sched_setaffinity(0, sorted(allowed)[:2])
            assert usable_cores() == 2
    finally:
        os.sched_setaffinity(0, allowed)
