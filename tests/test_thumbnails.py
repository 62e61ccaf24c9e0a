"""Live thumbnails from real H.264 keyframes, through a real StreamHub."""
from __future__ import annotations

import asyncio
import threading

import av
import pytest

from ingest.frames import StreamStart
from ingest.hub import StreamHub
from storage.segments import SegmentStore
from transcode_media import source
from transcoder.thumbnails import ThumbnailPool, Thumbnailer, render_jpeg


def jpeg_size(path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        pic = next(c.decode(video=0))
        return pic.width, pic.height


async def wait_for(predicate, timeout=20.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
async def test_thumbnail_is_a_jpeg_of_the_width_and_follows_the_video(tmp_path):
    config, frames = source(854, 480, seconds=3.0, gop=30)
    store = SegmentStore(tmp_path)
    pool = ThumbnailPool(max_workers=1)
    hub = StreamHub(1)
    thumbs = Thumbnailer("room1", hub, store, pool, interval_s=0.3, width=320)
    thumbs.start()
    path = tmp_path / "room1" / "thumbnail.jpg"
    hub.publish(StreamStart(1, 1))
    hub.publish(config)
    seen = []
    for i in range(0, len(frames), 30):  # one GOP at a time, paced past the interval
        for f in frames[i:i + 30]:
            hub.publish(f)
        await wait_for(lambda: thumbs.written > len(seen))
        data = path.read_bytes()
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # SOI ... EOI
        assert jpeg_size(path) == (320, 180)
        seen.append(data)
        await asyncio.sleep(0.35)
    assert len(seen) == 3 and len(set(seen)) == 3  # the picture moves, so does the thumbnail
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    hub.close()
    await asyncio.wait_for(thumbs.wait(), 10)
    pool.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("thumbnail")]


@pytest.mark.slow
async def test_interval_limits_decodes_and_pool_is_shared(tmp_path):
    config, frames = source(640, 360, seconds=3.0, gop=10)
    store = SegmentStore(tmp_path)
    pool = ThumbnailPool(max_workers=1, max_pending=4)
    hubs = [StreamHub(n) for n in range(3)]
    rooms = [Thumbnailer(f"room{n}", hub, store, pool, interval_s=60.0, width=161) for n, hub in enumerate(hubs)]
    for t in rooms:
        t.start()
    for hub in hubs:
        hub.publish(StreamStart(hub.live_id, 1))
        hub.publish(config)
        for f in frames:  # 9 keyframes each, all within one interval
            hub.publish(f)
        hub.close()
    for t in rooms:
        await asyncio.wait_for(t.wait(), 20)
    pool.shutdown()
    assert [t.written for t in rooms] == [1, 1, 1]
    assert jpeg_size(tmp_path / "room2" / "thumbnail.jpg") == (162, 90)  # even sizes for 4:2:0


def test_render_jpeg_rejects_a_non_keyframe():
    config, frames = source(640, 360, seconds=1.0, gop=30)
    with pytest.raises((ValueError, av.error.FFmpegError)):
        render_jpeg("h264", config.record, frames[5].data[:20], 320)
