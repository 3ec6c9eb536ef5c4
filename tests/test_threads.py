"""The bounded prefetch queue between ingest stages (loupe.threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from loupe.threads import prefetch


def test_items_come_in_order_and_the_producer_runs_ahead_by_at_most_maxsize() -> None:
    made: list[int] = []

    def source() -> Iterator[int]:
        for i in range(50):
            made.append(i)
            yield i

    got = []
    for i in prefetch(source(), 3):
        time.sleep(0.001)
        # queue (3) + the item the producer holds while it waits + the one just handed over
        assert len(made) - len(got) <= 5
        got.append(i)
    assert got == list(range(50))


def test_the_producers_exception_is_raised_after_its_items() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("damaged frame")

    got = []
    with pytest.raises(ValueError, match="damaged frame"):
        for i in prefetch(source(), 8):
            got.append(i)
    assert got == [1, 2]


def test_a_consumer_that_stops_stops_the_producer_and_closes_its_source_in_its_thread() -> None:
    closed_in: list[str] = []
    made: list[int] = []

    def source() -> Iterator[int]:
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    it = prefetch(source(), 2, name="test-producer")
    assert next(it) == 0
    it.close()  # what a for loop does when its body raises
    assert closed_in == ["test-producer"]
    assert len(made) < 10
    assert not any(t.name == "test-producer" for t in threading.enumerate())


def test_an_empty_source_ends_at_once() -> None:
    assert list(prefetch(iter(()), 1)) == []
