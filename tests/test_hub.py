"""The hub never waits for a subscriber and never holds more than a bounded backlog."""

from __future__ import annotations

import asyncio
import json

from app.live.hub import RESYNC, Hub, Resync


def test_sequence_numbers_are_per_site_and_stamped_on_the_message() -> None:
    hub = Hub(queue_size=4)
    assert hub.publish(1, {"type": "samples"}) == 1
    assert hub.publish(1, {"type": "samples"}) == 2
    assert hub.publish(2, {"type": "samples"}) == 1
    subscription = hub.subscribe(1)
    hub.publish(1, {"type": "samples", "x": 1})
    item = subscription._queue.get_nowait()
    assert not isinstance(item, Resync)
    seq, text = item
    assert seq == 3
    assert json.loads(text) == {"type": "samples", "x": 1, "seq": 3}


def test_a_stuck_subscriber_is_bounded_and_told_to_resync_while_others_keep_up() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=8)
        stuck = hub.subscribe(1)
        reader = hub.subscribe(1)
        received: list[int] = []
        for n in range(100):
            hub.publish(1, {"n": n})
            assert stuck.qsize() <= 8
            item = await asyncio.wait_for(reader.get(), timeout=1)
            assert not isinstance(item, Resync)
            received.append(item[0])
        assert received == list(range(1, 101)), "the healthy reader missed nothing"
        # The stuck queue fills with messages 1-8, so message 9 finds it full: the backlog
        # is dropped and one RESYNC marker left in its place. The marker and the next 7
        # messages fill it again, so messages 17, 25, ... 97 overflow it as well.
        overflows = range(9, 101, 8)
        assert stuck.resyncs == len(overflows)
        left = stuck.drain()
        assert left[0] is RESYNC, "the backlog was replaced by the resync marker"
        after_marker = [item for item in left[1:] if not isinstance(item, Resync)]
        assert len(after_marker) == len(left) - 1, "one marker, however often it fell behind"
        # Only what was published after the last overflow is left, in order, unchanged.
        assert [seq for seq, _ in after_marker] == list(range(overflows[-1] + 1, 101))
        assert [json.loads(text)["n"] for _, text in after_marker] == [97, 98, 99]

    asyncio.run(scenario())


def test_unsubscribed_clients_receive_nothing() -> None:
    hub = Hub(queue_size=4)
    subscription = hub.subscribe(1)
    hub.unsubscribe(subscription)
    hub.publish(1, {"n": 1})
    assert subscription.qsize() == 0
    assert hub.subscriber_count(1) == 0


def test_resync_all_marks_every_subscriber() -> None:
    hub = Hub(queue_size=4)
    first, second = hub.subscribe(1), hub.subscribe(1)
    hub.publish(1, {"n": 1})
    hub.resync_all(1)
    assert first._queue.get_nowait() is RESYNC
    assert second._queue.get_nowait() is RESYNC
