import threading
import time

import pytest

from lifecycle.core.parallel import IN_FLIGHT_PER_THREAD, ordered_map, usable_cores


def test_results_come_back_in_input_order_whatever_finishes_first():
    def slow_for_small(n):
        time.sleep(0.002 * (20 - n % 20))
        return n * n
    assert list(ordered_map(slow_for_small, range(100), threads=4)) == [n * n for n in range(100)]


def test_work_is_spread_over_threads():
    names = set()

    def record(n):
        names.add(threading.get_ident())
        time.sleep(0.01)
        return n
    assert list(ordered_map(record, range(40), threads=3)) == list(range(40))
    assert len(names) == 3


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
    started = []
    results = ordered_map(lambda n: started.append(n) or n, range(10_000), threads=2)
    next(results)
    time.sleep(0.05)
    assert len(started) <= 2 * IN_FLIGHT_PER_THREAD + 1


def test_one_thread_is_plain_map_and_cores_are_counted():
    assert list(ordered_map(str, [1, 2], threads=1)) == ["1", "2"]
    assert usable_cores() >= 1
