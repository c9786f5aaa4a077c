"""Read an iterator one item ahead in a thread: the next KiviCare page is fetched while this one is planned.

``prefetched(pages)`` yields what ``pages`` yields, in order, with at most ``ahead`` items waiting; an error
raised by ``pages`` is raised at the point where its item would have come. When the consumer stops early
(an error of its own, or ``close()``), the producer is told to stop after the item it is fetching and is
not left blocked. Requests stay one after the other: the producer never runs two ``next()`` at once.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

from sidecar.storage import close_database

T = TypeVar("T")

_DONE = object()


def prefetched(items: Iterator[T], ahead: int = 1) -> Iterator[T]:
    """``items``, each fetched in a helper thread while the caller works on the one before."""
    waiting: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close_database()  # the client may note a state (an encrypted answer): this thread's connection goes

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
