"""StreamRegistry: takeover, stale detach, end-grace timer, listeners, drop()."""
from __future__ import annotations

import asyncio

from ingest.frames import StreamEnd, StreamStart
from ingest.hub import StreamHub
from ingest.registry import StreamRegistry


class Publisher:
    """What a session offers the registry; drop() detaches at once, as a
    session whose task is cancelled would do in its cleanup."""

    def __init__(self, registry: StreamRegistry, live_id: int, name: str) -> None:
        self.registry, self.live_id, self.name = registry, live_id, name
        self.dropped: list[str] = []
        self.session_id = 0

    def publish(self) -> StreamHub:
        hub, self.session_id = self.registry.attach(self.live_id, self)
        hub.publish(StreamStart(self.live_id, self.session_id))
        return hub

    def drop(self, reason: str) -> None:
        self.dropped.append(reason)
        self.registry.detach(self.live_id, self)

    def stats(self) -> dict:
        return {"name": self.name, "bytes": 123}


async def test_attach_creates_hub_once_and_listener_subscribes():
    reg = StreamRegistry(end_grace_s=5)
    created: list[StreamHub] = []
    consumers = []
    reg.add_listener(created.append)
    reg.add_listener(lambda hub: consumers.append(hub.subscribe("packager")))
    a = Publisher(reg, 1, "a")
    hub = a.publish()
    assert created == [hub] and reg.hub(1) is hub and reg.publisher(1) is a
    assert a.session_id == 1
    assert consumers[0].get_nowait() == StreamStart(1, 1)  # subscribed before the first item
    other = Publisher(reg, 2, "other").publish()
    assert created == [hub, other]
    await reg.close()


async def test_takeover_drops_old_and_its_detach_is_a_no_op():
    reg = StreamRegistry(end_grace_s=0.05)
    created = []
    reg.add_listener(created.append)
    old, new = Publisher(reg, 1, "old"), Publisher(reg, 1, "new")
    hub = old.publish()
    c = hub.subscribe("c")
    assert new.publish() is hub
    assert old.dropped == ["takeover"] and reg.publisher(1) is new
    assert new.session_id == 2
    reg.detach(1, old)  # late detach of the replaced session
    hub.publish(StreamEnd(1, 1, "closed"))  # and its late StreamEnd
    await asyncio.sleep(0.1)
    assert not hub.closed and reg.hub(1) is hub and created == [hub]
    items = [c.get_nowait() for _ in range(c.queued_items)]
    assert items == [StreamStart(1, 1), StreamEnd(1, 1, "takeover"), StreamStart(1, 2)]
    assert [s["name"] for s in reg.streams()] == ["new"]
    await reg.close()


async def test_grace_timer_closes_hub_and_consumers_get_none():
    reg = StreamRegistry(end_grace_s=0.05)
    created = []
    reg.add_listener(created.append)
    a = Publisher(reg, 1, "a")
    hub = a.publish()
    c = hub.subscribe("c")
    reg.detach(1, a)
    assert reg.hub(1) is hub and not hub.closed  # still in grace
    assert await asyncio.wait_for(c.get(), 1) == StreamStart(1, 1)
    assert await asyncio.wait_for(c.get(), 1) is None  # closed by the timer
    assert hub.closed and reg.hub(1) is None and reg.streams() == []
    b = Publisher(reg, 1, "b")
    hub2 = b.publish()
    assert hub2 is not hub and created == [hub, hub2] and b.session_id == 2
    await reg.close()


async def test_reattach_within_grace_reuses_the_hub():
    reg = StreamRegistry(end_grace_s=0.15)
    created = []
    reg.add_listener(created.append)
    a = Publisher(reg, 1, "a")
    hub = a.publish()
    reg.detach(1, a)
    await asyncio.sleep(0.05)
    b = Publisher(reg, 1, "b")
    assert b.publish() is hub
    await asyncio.sleep(0.25)  # past the original deadline: the timer was cancelled
    assert not hub.closed and reg.hub(1) is hub and created == [hub]
    await reg.close()
    assert hub.closed and b.dropped == ["shutdown"]


async def test_drop_returns_whether_there_was_a_publisher():
    reg = StreamRegistry(end_grace_s=0.05)
    assert reg.drop(1, "blocked") is False
    a = Publisher(reg, 1, "a")
    a.publish()
    assert reg.drop(1, "blocked") is True
    assert a.dropped == ["blocked"] and reg.publisher(1) is None
    assert reg.drop(1, "blocked") is False
    await reg.close()


async def test_streams_lists_publishers_with_stats():
    reg = StreamRegistry()
    Publisher(reg, 1, "a").publish()
    Publisher(reg, 2, "b").publish()
    assert sorted(reg.streams(), key=lambda s: s["live_id"]) == [
        {"live_id": 1, "session_id": 1, "name": "a", "bytes": 123},
        {"live_id": 2, "session_id": 1, "name": "b", "bytes": 123},
    ]
    await reg.close()
    assert reg.streams() == [] and reg.hub(1) is None


async def test_failing_listener_does_not_stop_ingest(caplog):
    reg = StreamRegistry()

    def broken(hub):
        raise RuntimeError("packager broke")

    reg.add_listener(broken)
    hub = Publisher(reg, 1, "a").publish()
    assert reg.hub(1) is hub and "packager broke" in caplog.text
    await reg.close()


async def test_zero_grace_closes_at_once_and_custom_hub_factory():
    made = []

    def factory(live_id):
        hub = StreamHub(live_id, gop_cache_max_frames=5)
        made.append(hub)
        return hub

    reg = StreamRegistry(end_grace_s=0, hub_factory=factory)
    a = Publisher(reg, 3, "a")
    hub = a.publish()
    assert made == [hub] and hub.gop_cache_max_frames == 5
    reg.detach(3, a)
    assert hub.closed and reg.hub(3) is None
    await reg.close()
