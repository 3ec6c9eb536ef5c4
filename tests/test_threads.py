"""The bounded prefetch queue between ingest stages (loupe.threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from loupe.threads import interleave, prefetch


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


def test_interleave_keeps_each_streams_order_and_loses_nothing() -> None:
    def slow(n: int) -> Iterator[str]:
        for i in range(n):
            time.sleep(0.002)
            yield f"p{i}"

    got = list(interleave(slow(30), (f"s{i}" for i in range(50)), 4))
    assert [g for g in got if g[0] == "p"] == [f"p{i}" for i in range(30)]
    assert [g for g in got if g[0] == "s"] == [f"s{i}" for i in range(50)]
    # The secondary's items arrive while the primary is still running, not only after it.
    assert got.index("s0") < got.index("p29")


def test_interleave_raises_the_secondarys_error_and_stops_it_when_the_primary_fails() -> None:
    def bad() -> Iterator[str]:
        yield "s0"
        raise ValueError("audio track damaged")

    with pytest.raises(ValueError, match="audio track damaged"):
        list(interleave(iter(["p0"]), bad(), 2))
    closed: list[bool] = []

    def endless() -> Iterator[str]:
        try:
            while True:
                yield "s"
        finally:
            closed.append(True)

    def failing() -> Iterator[str]:
        yield "p0"
        raise RuntimeError("frames failed")

    with pytest.raises(RuntimeError, match="frames failed"):
        list(interleave(failing(), endless(), 2, name="test-secondary"))
    assert closed == [True]
    assert not any(t.name == "test-secondary" for t in threading.enumerate())
