"""Thread → UI without flooding it: the latest value per key, delivered at most ``hz`` times a second.

Watch threads and engine workers may report thousands of changes a second (1000 nodes
restarting, a relist after 410 Gone). Each change lands in a buffer — the newest value per key
wins — and the widget is woken by one ``Coalescer.Ready`` message that ``can_replace`` any
queued twin (toolong's pattern), then throttled to a frame rate, so the UI redraws once per
frame with everything that changed since the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump


class Coalescer:
    """Buffer changes from any thread; ``flush(latest, items)`` runs on the UI thread, at most hz per second."""

    class Ready(Message):
        """Something is buffered; a newer Ready supersedes a queued one."""

        def __init__(self, coalescer: Coalescer):
            super().__init__()
            self.coalescer = coalescer

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, Coalescer.Ready) and message.coalescer is self.coalescer

    def __init__(self, target: MessagePump, flush: Callable[[dict[Hashable, Any], list[Any]], None],
                 hz: float = 30.0):
        self.target = target
        self.flush = flush
        self.interval = 1.0 / hz
        self._lock = threading.Lock()
        self._latest: dict[Hashable, Any] = {}
        self._items: list[Any] = []
        self._scheduled = False
        self._last = 0.0
        self._timer = None
        self.flushes = 0  # frames delivered (for the benchmark)
        self.received = 0  # changes put (for the benchmark)

    # ------------------------------------------------------------------ any thread
    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._latest[key] = value
            self.received += 1
            if self._scheduled:
                return
            self._scheduled = True
        self.target.post_message(Coalescer.Ready(self))

    def put_many(self, pairs) -> None:
        with self._lock:
            for key, value in pairs:
                self._latest[key] = value
                self.received += 1
            if self._scheduled:
                return
            self._scheduled = True
        self.target.post_message(Coalescer.Ready(self))

    def append(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            self.received += 1
            if self._scheduled:
                return
            self._scheduled = True
        self.target.post_message(Coalescer.Ready(self))

    # ------------------------------------------------------------------ UI thread
    def ready(self) -> None:
        """Call from the target's Ready handler: flush now, or once the frame interval has passed."""
        wait = self.interval - (time.monotonic() - self._last)
        if wait > 0:
            if self._timer is None:
                self._timer = self.target.set_timer(wait, self._deliver)
            return
        self._deliver()

    def _deliver(self) -> None:
        self._timer = None
        with self._lock:
            latest, items = self._latest, self._items
            self._latest, self._items, self._scheduled = {}, [], False
        self._last = time.monotonic()
        if latest or items:
            self.flushes += 1
            self.flush(latest, items)
