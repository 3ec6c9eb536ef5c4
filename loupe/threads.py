"""Threads between the stages of ingest: a bounded prefetch queue (imports nothing of Loupe: any room may use it).

ffmpeg decoding, frame OCR and the embedders spend their time in native code that releases the GIL, so stages
run in threads overlap on separate cores; the queue between two stages bounds how far the producer may run
ahead, so memory stays flat however long the file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

_T = TypeVar("_T")


_DONE = object()


def prefetch(items: Iterator[_T], maxsize: int, name: str = "loupe-prefetch") -> Iterator[_T]:
    """Yield ``items`` while a thread computes the next ones, at most ``maxsize`` ahead (a bounded queue).

    The producer's exception is re-raised here, in order, after the items it produced. When the consumer stops
    early (an exception, ``close()``), the producer stops at its next item and the source iterator is closed in
    the producer's thread (a generator holding an ffmpeg pipe ends it there).

    >>> list(prefetch(iter(range(3)), 2))
    [0, 1, 2]
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
        except BaseException as e:  # handed to the consumer, re-raised there
            put((_DONE, e))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put((_DONE, None))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            got = q.get()
            if isinstance(got, tuple) and len(got) == 2 and got[0] is _DONE:
                if got[1] is not None:
                    raise got[1]
                return
            yield got
    finally:
        stop.set()
        worker.join()
