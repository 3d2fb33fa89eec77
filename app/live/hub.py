"""In-process publish/subscribe, one topic per site, with a bounded queue per subscriber.

Publishing never waits for a subscriber: a message is offered to each queue
and a full queue means that subscriber has fallen behind. Its backlog is then
thrown away and replaced by one RESYNC marker, so memory stays bounded and
the subscriber is told to start again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final


class Resync:
    """The marker left in a subscriber's queue when its backlog was dropped."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final = Resync()

Item = tuple[int, str] | Resync


class Subscription:
    def __init__(self, site_id: int, maxsize: int) -> None:
        self.site_id = site_id
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=maxsize)
        self.resyncs = 0  # how often this subscriber fell behind

    def offer(self, item: tuple[int, str]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.fall_behind()

    def fall_behind(self) -> None:
        """Drop the backlog and leave only a RESYNC marker."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(RESYNC)
        self.resyncs += 1

    async def get(self) -> Item:
        return await self._queue.get()

    def drain(self) -> list[Item]:
        """Everything queued now, without waiting."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def qsize(self) -> int:
        return self._queue.qsize()


class Hub:
    """Topics are site ids; every message gets the site's next sequence number."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[int, set[Subscription]] = {}
        self._seq: dict[int, int] = {}

    def subscribe(self, site_id: int) -> Subscription:
        subscription = Subscription(site_id, self._queue_size)
        self._subscribers.setdefault(site_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.get(subscription.site_id, set()).discard(subscription)

    @property
    def subscribers(self) -> int:
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def seq(self, site_id: int) -> int:
        return self._seq.get(site_id, 0)

    def subscriber_count(self, site_id: int) -> int:
        return len(self._subscribers.get(site_id, ()))

    def publish(self, site_id: int, message: dict[str, Any]) -> int:
        """Stamp `message` with the next sequence number, encode it once, offer it to all."""
        seq = self._seq.get(site_id, 0) + 1
        self._seq[site_id] = seq
        text = json.dumps({**message, "seq": seq}, separators=(",", ":"))
        for subscription in self._subscribers.get(site_id, ()):
            subscription.offer((seq, text))
        return seq

    def resync_all(self, site_id: int) -> None:
        """Every subscriber of the site must start again from a snapshot (the layout changed)."""
        for subscription in self._subscribers.get(site_id, ()):
            subscription.fall_behind()
