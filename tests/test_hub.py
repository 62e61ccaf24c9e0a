"""StreamHub fan-out: order, GOP cache for late consumers, slow consumers that
skip to the next keyframe while fast ones get everything, bounded memory,
close semantics."""
from __future__ import annotations

import asyncio
import logging

import pytest

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from ingest.hub import StreamHub

VCFG = CodecConfig(VIDEO, "h264", b"\x01avcC-record", width=320, height=240)
ACFG = CodecConfig(AUDIO, "aac", b"\x11\x90", sample_rate=48000, channels=2)


def vframe(t: int, key: bool = False, size: int = 100) -> Frame:
    return Frame(VIDEO, "h264", t, t, key, bytes([t & 0xFF]) * size)


def aframe(t: int, size: int = 20) -> Frame:
    return Frame(AUDIO, "aac", t, t, True, bytes([t & 0xFF]) * size)


def stream(gops: int, gop_len: int = 30, start_t: int = 0) -> list:
    """Video at ~30 fps with a keyframe every gop_len frames, audio interleaved."""
    items = []
    for i in range(gops * gop_len):
        t = start_t + i * 33
        items.append(vframe(t, key=i % gop_len == 0))
        if i % 3 == 0:
            items.append(aframe(t + 1))
    return items


def drain(consumer) -> list:
    out = []
    while True:
        try:
            item = consumer.get_nowait()
        except asyncio.QueueEmpty:
            return out
        if item is None:
            return out + [None]
        out.append(item)


def start_hub(**kw) -> tuple[StreamHub, StreamStart]:
    hub = StreamHub(7, **kw)
    start = StreamStart(7, 1, {"encoder": "test"})
    hub.publish(start)
    hub.publish(VCFG)
    hub.publish(ACFG)
    return hub, start


async def test_items_arrive_in_publish_order_to_every_consumer():
    hub = StreamHub(7)
    a, b = hub.subscribe("a"), hub.subscribe("b")
    items = [StreamStart(7, 1), VCFG, ACFG] + stream(2) + [StreamEnd(7, 1, "unpublish")]
    for item in items:
        hub.publish(item)
    assert drain(a) == items
    assert [await b.get() for _ in items] == items
    assert a.dropped == b.dropped == 0


async def test_late_consumer_starts_with_start_configs_and_gop_cache():
    hub, start = start_hub()
    media = stream(3, gop_len=10)
    for item in media:
        hub.publish(item)
    last_key = max(i for i, f in enumerate(media) if f.kind == VIDEO and f.keyframe)
    late = hub.subscribe("late")
    got = drain(late)
    assert got[:3] == [start, VCFG, ACFG]
    assert got[3:] == media[last_key:]
    assert got[3].keyframe and got[3].kind == VIDEO
    live = vframe(10_000)
    hub.publish(live)
    assert late.get_nowait() == live


async def test_consumer_before_first_keyframe_gets_no_stale_frames():
    hub, start = start_hub()
    hub.publish(aframe(1))
    hub.publish(vframe(2, key=False))
    assert drain(hub.subscribe("c")) == [start, VCFG, ACFG]


async def test_slow_consumer_skips_to_keyframe_while_fast_gets_everything(caplog):
    caplog.set_level(logging.WARNING, logger="ingest.hub")
    hub, start = start_hub()
    fast = hub.subscribe("fast")
    slow = hub.subscribe("slow", max_items=60)  # one GOP (40 items) fits, two do not
    received_fast = []

    async def read_fast():
        while (item := await fast.get()) is not None:
            received_fast.append(item)

    reader = asyncio.create_task(read_fast())
    await asyncio.sleep(0)
    media = stream(5, gop_len=30)
    for n, item in enumerate(media):
        hub.publish(item)  # synchronous: never waits for either consumer
        if n % 10 == 0:
            await asyncio.sleep(0)  # let the fast reader run now and then
    hub.close()
    await asyncio.wait_for(reader, 5)
    assert received_fast == [start, VCFG, ACFG] + media
    assert fast.dropped == fast.overflows == 0

    got = drain(slow)
    assert got[-1] is None
    frames = [f for f in got if isinstance(f, Frame)]
    assert got[:3] == [start, VCFG, ACFG]
    assert slow.overflows >= 1
    assert slow.dropped + len(frames) == len(media)
    # After the skip the slow consumer resumed exactly at a video keyframe.
    first = frames[0]
    assert first.kind == VIDEO and first.keyframe
    assert frames == media[media.index(first):]
    # Rate-limited logging: several overflows, one warning.
    warnings = [r for r in caplog.records if "fell behind" in r.getMessage()]
    assert len(warnings) == 1 < slow.overflows


async def test_never_reading_consumer_stays_within_bytes_limit():
    hub, _ = start_hub()
    stuck = hub.subscribe("stuck", max_bytes=64 * 1024)
    peak = 0
    for i in range(3000):
        hub.publish(vframe(i * 33, key=i % 60 == 0, size=5000))
        if i % 2:
            hub.publish(aframe(i * 33, size=400))
        peak = max(peak, stuck.queued_bytes)
    assert peak <= 64 * 1024
    assert stuck.queued_items < 20
    assert stuck.dropped > 2500 and stuck.overflows > 10


async def test_config_spam_does_not_grow_a_stalled_queue():
    hub, _ = start_hub()
    stuck = hub.subscribe("stuck", max_items=16)
    for i in range(2000):
        hub.publish(CodecConfig(VIDEO, "h264", b"rec%d" % i))
        hub.publish(vframe(i, key=True))
    assert stuck.queued_items <= 16
    items = drain(stuck)
    # Still delivered in an order a packager can use: the latest config before its frames.
    assert isinstance(items[-2], CodecConfig) and items[-2].record == b"rec1999"


async def test_audio_only_consumer_resumes_on_next_frame():
    hub = StreamHub(7)
    hub.publish(StreamStart(7, 1))
    hub.publish(ACFG)
    c = hub.subscribe("c", max_items=5)
    for i in range(20):
        hub.publish(aframe(i))
    got = drain(c)
    assert c.overflows >= 1
    assert [f.dts for f in got if isinstance(f, Frame)][-1] == 19
    assert len(got) <= 5


async def test_close_wakes_waiters_and_drains_first():
    hub, start = start_hub()
    c = hub.subscribe("c")
    waiter_hub = StreamHub(8)
    waiting = waiter_hub.subscribe("w")
    task = asyncio.create_task(waiting.get())
    await asyncio.sleep(0)
    waiter_hub.close()
    assert await asyncio.wait_for(task, 1) is None
    hub.close()
    assert hub.closed and hub.consumers == []
    assert [await c.get() for _ in range(3)] == [start, VCFG, ACFG]
    assert await c.get() is None
    assert c.get_nowait() is None
    hub.publish(vframe(1, key=True))  # ignored after close
    assert drain(hub.subscribe("after")) == [None]


async def test_consumer_close_discards_and_unsubscribes():
    hub, _ = start_hub()
    c = hub.subscribe("c")
    task = asyncio.create_task(hub.subscribe("d").get())
    c.close()
    assert c not in hub.consumers and len(hub.consumers) == 1
    assert await c.get() is None
    hub.publish(vframe(1, key=True))
    assert c.get_nowait() is None
    assert await asyncio.wait_for(task, 1) is not None  # d saw the start item


async def test_get_nowait_on_empty_raises_queue_empty():
    hub = StreamHub(7)
    with pytest.raises(asyncio.QueueEmpty):
        hub.subscribe("c").get_nowait()


async def test_new_session_resets_configs_and_gop_and_stale_end_is_ignored():
    hub, start = start_hub()
    for item in stream(1, gop_len=5):
        hub.publish(item)
    c = hub.subscribe("c")
    drain(c)
    new = StreamStart(7, 2)
    hub.publish(new)
    assert hub.configs == {} and hub.gop_cache == []
    hub.publish(StreamEnd(7, 1, "takeover"))  # the old session's late end
    assert hub.start is new
    assert drain(c) == [new]
    hub.publish(StreamEnd(7, 2, "unpublish"))
    assert hub.start is None
    assert drain(hub.subscribe("between")) == []


async def test_gop_cache_limits_and_config_change():
    hub, _ = start_hub(gop_cache_max_frames=10)
    for item in stream(1, gop_len=30):
        hub.publish(item)
    assert hub.gop_cache == []  # GOP too long to cache
    hub.publish(vframe(5000, key=True))
    assert len(hub.gop_cache) == 1
    hub.publish(CodecConfig(VIDEO, "h264", b"other"))
    assert hub.gop_cache == []


async def test_publish_is_linear_and_does_not_need_a_loop_turn():
    hub, _ = start_hub()
    consumers = [hub.subscribe(f"c{i}", max_items=100) for i in range(200)]
    for item in stream(4):
        hub.publish(item)
    assert all(c.queued_items <= 100 for c in consumers)
