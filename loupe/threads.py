"""Threads between the stages of ingest: bounded prefetch queues (imports nothing of Loupe: any room may use it).

ffmpeg decoding, frame OCR and the embedders spend their time in native code that releases the GIL, so stages
run in threads overlap on separate cores; the queue between two stages bounds how far the producer may run
ahead, so memory stays flat however long the file.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

_DONE = object()
_EMPTY = object()


def machine_threads() -> int:
    """CPU cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Producer(Generic[_T]):
    """A thread that pulls ``items`` into a bounded queue; :meth:`next` hands them over in order."""

    def __init__(self, items: Iterator[_T], maxsize: int, name: str) -> None:
        self._items = items
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self.done = False
        self._worker = threading.Thread(target=self._produce, name=name, daemon=True)
        self._worker.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    break
        except BaseException as e:  # handed to the consumer, re-raised there
            self._put((_DONE, e))
            return
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
        self._put((_DONE, None))

    def next(self, block: bool = True) -> Any:
        """The next item; ``_EMPTY`` when the source has ended (``done`` is then set) or, without ``block``, when
        none is ready yet. Re-raises the producer's exception after the items it produced."""
        if self.done:
            return _EMPTY
        try:
            got = self._q.get(block=block)
        except queue.Empty:
            return _EMPTY
        if isinstance(got, tuple) and len(got) == 2 and got[0] is _DONE:
            self.done = True
            if got[1] is not None:
                raise got[1]
            return _EMPTY
        return got

    def close(self) -> None:
        """Stop the producer at its next item and wait for its thread (the source is closed there)."""
        self._stop.set()
        self._worker.join()


def prefetch(items: Iterator[_T], maxsize: int, name: str = "loupe-prefetch") -> Iterator[_T]:
    """Yield ``items`` while a thread computes the next ones, at most ``maxsize`` ahead (a bounded queue).

    The producer's exception is re-raised here, in order, after the items it produced. When the consumer stops
    early (an exception, ``close()``), the producer stops at its next item and the source iterator is closed in
    the producer's thread (a generator holding an ffmpeg pipe ends it there).

    >>> list(prefetch(iter(range(3)), 2))
    [0, 1, 2]
    """
    producer = _Producer(items, maxsize, name)
    try:
        while (got := producer.next()) is not _EMPTY:
            yield got
    finally:
        producer.close()


def interleave(
    primary: Iterator[_T], secondary: Iterator[_T], maxsize: int, name: str = "loupe-interleave"
) -> Iterator[_T]:
    """Yield ``primary`` in order, and ``secondary`` (computed in a thread, at most ``maxsize`` ahead) as its
    items become ready: after each primary item, then the rest once ``primary`` has ended.

    Each stream keeps its own order; how the two mix depends on timing. An exception of either is raised here
    (the secondary's when its turn comes); when either fails or the consumer stops, the secondary thread stops.

    >>> sorted(interleave(iter([1, 3]), iter([2, 4]), 2))
    [1, 2, 3, 4]
    """
    producer = _Producer(secondary, maxsize, name)
    try:
        for item in primary:
            yield item
            while (got := producer.next(block=False)) is not _EMPTY:
                yield got
        while (got := producer.next()) is not _EMPTY:
            yield got
    finally:
        producer.close()
