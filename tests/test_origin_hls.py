"""HLS origin over a real aiohttp server: headers, blocking reload, delta
updates, preload-hinted parts, errors."""
from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import re
import time

import m3u8
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import hls_media
from hls_media import FeedConsumer
from ingest.frames import AUDIO, VIDEO, Frame, StreamEnd, StreamStart
from origin.files import FileOutputs
from origin.hls import HLS_ORIGIN, add_hls_routes
from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.packaging import PackagingService

ROOM = "room42"
SETTINGS = HlsSettings(target_duration_ms=1000, part_target_ms=250, max_segment_ms=1000, window_segments=30)
BASE = f"/live/{ROOM}"


def frames(seconds: float, t0: int = 500, fps: int = 10, gop: int = 10):
    n = int(seconds * fps)
    out = [Frame(VIDEO, "h264", t0 + i * 100, t0 + i * 100, i % gop == 0, b"\0\0\0\x02\x65\x88" + bytes(400))
           for i in range(n)]
    out += [Frame(AUDIO, "aac", t0 + i * 1024 * 1000 // 48000, t0 + i * 1024 * 1000 // 48000, True, b"\x21" * 50)
            for i in range(int(seconds * 48000) // 1024)]
    return hls_media.interleave(out)


@pytest.fixture(scope="module")
def configs():
    vc, _ = hls_media.h264(0.1)
    ac, _ = hls_media.aac(0.1)
    return vc, ac


async def start_origin(tmp_path, settings=SETTINGS):
    """An origin on 127.0.0.1 serving one packager fed by the test: (store,
    service, client, feed, out of the room's source rendition)."""
    store = SegmentStore(tmp_path / "hls")
    service = PackagingService(store, settings)
    app = web.Application()
    add_hls_routes(app, service)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    feed = FeedConsumer()
    out = service.start_rendition(ROOM, "source", feed)
    return store, service, client, feed, out


@pytest.fixture
async def live(tmp_path, configs):
    _, service, client, feed, out = await start_origin(tmp_path)
    feed.feed([StreamStart(1, 1), *configs])
    try:
        yield client, feed, out
    finally:
        feed.feed([None])
        await service.stop()
        await client.close()


async def until(out, pred, timeout=10):
    assert await out.wait_until(pred, timeout), "condition not reached"


async def test_room_not_live_is_404_json(live):
    client, _feed, _out = live
    for path in ("/live/nobody/master.m3u8", "/live/nobody/source/index.m3u8", "/live/nobody/source/seg1.m4s"):
        r = await client.get(path)
        assert r.status == 404
        body = await r.json()
        assert body["error"] == "not_live" and body["message"]
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_playlists_and_files_headers(live):
    client, feed, out = live
    feed.feed(frames(3.0))
    await until(out, lambda: out.playlist is not None and len(out.playlist.segments) >= 2)
    while not feed.queue.empty():  # let the packager settle so the playlist is stable
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)

    r = await client.get(f"{BASE}/master.m3u8")
    assert r.status == 200 and r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    master = m3u8.loads(await r.text())
    (variant,) = master.playlists
    assert variant.uri == "source/index.m3u8"
    assert variant.stream_info.codecs == "avc1.64000d,mp4a.40.2"
    assert variant.stream_info.resolution == (320, 240)
    assert variant.stream_info.bandwidth > 0 and variant.stream_info.average_bandwidth > 0
    assert variant.stream_info.frame_rate == pytest.approx(10.0, abs=0.1)

    r = await client.get(f"{BASE}/source/index.m3u8", headers={"Accept-Encoding": "identity"})
    assert r.status == 200
    h = r.headers
    assert h["Content-Type"] == "application/vnd.apple.mpegurl"
    assert h["Cache-Control"] == "public, max-age=1"
    assert h["Access-Control-Allow-Origin"] == "*" and h["ETag"] and h["Last-Modified"]
    text = await r.text()
    pl = m3u8.loads(text)
    assert pl.segments and pl.preload_hint is not None
    r304 = await client.get(f"{BASE}/source/index.m3u8",
                            headers={"If-None-Match": h["ETag"], "Accept-Encoding": "identity"})
    assert r304.status == 304

    rz = await client.get(f"{BASE}/source/index.m3u8", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert rz.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await rz.read()).decode().startswith("#EXTM3U")

    init_uri, seg_uri, part_uri = pl.segments[0].init_section.uri, pl.segments[0].uri, pl.segments[0].parts[0].uri
    r = await client.get(f"{BASE}/source/{init_uri}")
    assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
    assert "immutable" in r.headers["Cache-Control"] and r.headers["ETag"] and r.headers["Last-Modified"]
    seg = await (await client.get(f"{BASE}/source/{seg_uri}")).read()
    r = await client.get(f"{BASE}/source/{part_uri}")
    assert r.headers["Content-Type"] == "video/iso.segment" and seg.startswith(await r.read())
    r = await client.head(f"{BASE}/source/{seg_uri}")
    assert r.status == 200 and int(r.headers["Content-Length"]) == len(seg) and await r.read() == b""
    r = await client.get(f"{BASE}/source/{seg_uri}", headers={"Range": "bytes=0-99"})
    assert r.status == 206 and await r.read() == seg[:100]
    r = await client.options(f"{BASE}/source/{seg_uri}")
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"

    for bad in ("state.json", "index.m3u8x", "evil.txt", "seg1.m4s.tmp", "..%2Fstate.json"):
        r = await client.get(f"{BASE}/source/{bad}")
        assert r.status == 404, bad
    assert (await client.get(f"{BASE}/nosuch/index.m3u8")).status == 404


async def test_blocking_reload_returns_when_the_part_is_written(live):
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and out.playlist.last_part() is not None
                and out.playlist.segments)
    await asyncio.sleep(0.1)
    msn, part = out.playlist.last_part()
    want = (msn, part + 1)
    req = asyncio.create_task(client.get(f"{BASE}/source/index.m3u8?_HLS_msn={want[0]}&_HLS_part={want[1]}"))
    await asyncio.sleep(0.3)
    assert not req.done()  # held: the part does not exist yet
    feed.feed(frames(1.0, t0=500 + 1500))
    r = await asyncio.wait_for(req, 5)
    # Released by the part, not by the blocking timeout (that would be a 503).
    assert r.status == 200
    assert r.headers["Cache-Control"] == f"public, max-age={6 * SETTINGS.playlist_target_duration_s}"
    pl = m3u8.loads(await r.text())
    uris = [p.uri for s in pl.segments for p in s.parts] + [p.uri for p in getattr(pl, "parts", [])]
    text_has = f"seg{want[0]}.{want[1]}.m4s" in await r.text() or f"seg{want[0] + 1}.0.m4s" in await r.text()
    assert text_has, uris


async def test_bad_blocking_requests_are_400(live):
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and bool(out.playlist.segments))
    last = out.playlist.next_msn - 1
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_msn={last + 3}")
    assert r.status == 400 and (await r.json())["error"] == "bad_request"
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_part=1")
    assert r.status == 400
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_msn=abc")
    assert r.status == 400
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_msn={last}")  # already there: immediate
    assert r.status == 200


async def test_held_request_released_when_stream_ends(live):
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and bool(out.playlist.segments))
    req = asyncio.create_task(client.get(f"{BASE}/source/index.m3u8?_HLS_msn={out.playlist.next_msn + 1}&_HLS_part=0"))
    await asyncio.sleep(0.3)
    assert not req.done()
    feed.feed([StreamEnd(1, 1, "unpublish"), None])  # publisher gone, grace over: live ends
    r = await asyncio.wait_for(req, 5)
    assert r.status == 200
    assert m3u8.loads(await r.text()).is_endlist


async def test_blocking_timeout_is_503(live):
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and out.playlist.last_part() is not None)
    await asyncio.sleep(0.2)
    msn, part = out.playlist.last_part()
    t0 = time.monotonic()
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_msn={msn}&_HLS_part={part + 1}")
    assert r.status == 503
    assert time.monotonic() - t0 >= SETTINGS.blocking_timeout_ms / 1000 - 0.1


async def test_preload_hinted_part_blocks_until_complete(live):
    client, feed, out = live
    feed.feed(frames(1.2))
    await until(out, lambda: out.playlist is not None and out.playlist.last_part() is not None)
    await asyncio.sleep(0.2)
    hint = out.playlist.preload_hint()
    req = asyncio.create_task(client.get(f"{BASE}/source/{hint}"))
    await asyncio.sleep(0.3)
    assert not req.done()
    feed.feed(frames(1.0, t0=500 + 1200))
    r = await asyncio.wait_for(req, 5)
    if r.status == 200:  # the hinted part was published
        assert r.headers["Content-Type"] == "video/iso.segment"
        assert await r.read() == (await (await client.get(f"{BASE}/source/{hint}")).read())
    else:  # a segment boundary came first: the hint is void (bis 6.2.6)
        assert r.status == 404


async def test_delta_update_with_skip(live):
    client, feed, out = live
    feed.feed(frames(12.0))
    await until(out, lambda: out.playlist is not None and len(out.playlist.segments) >= 11)
    full = m3u8.loads(await (await client.get(f"{BASE}/source/index.m3u8")).text())
    r = await client.get(f"{BASE}/source/index.m3u8?_HLS_skip=YES")
    text = await r.text()
    delta = m3u8.loads(text)
    assert "#EXT-X-VERSION:9" in text
    assert delta.skip.skipped_segments > 0
    assert delta.media_sequence == full.media_sequence
    # The first listed segment is the one after the skipped ones (the media
    # sequence still counts the skipped ones); the packager may have moved on
    # between the two requests, so compare by MSN, not with `full`.
    listed = [s.uri for s in delta.segments if s.uri]
    first = delta.media_sequence + delta.skip.skipped_segments
    assert listed == [f"seg{first + i}.m4s" for i in range(len(listed))]


async def test_service_start_packages_from_a_real_stream_hub(tmp_path, configs):
    from ingest.hub import StreamHub

    store = SegmentStore(tmp_path / "hls")
    service = PackagingService(store, SETTINGS)
    hub = StreamHub(7)
    try:
        service.start("hubroom", hub)
        for item in [StreamStart(7, 1), *configs, *frames(2.5)]:
            hub.publish(item)
        out = service.outputs("hubroom")["source"]
        await until(out, lambda: out.playlist is not None and len(out.playlist.segments) >= 1)
        hub.publish(StreamEnd(7, 1, "unpublish"))
        hub.close()  # the live is over for good: the consumer returns None
        await until(out, lambda: out.done)
        assert out.playlist.ended
        text = store.read("hubroom", "source", "index.m3u8").decode()
        assert m3u8.loads(text).is_endlist
    finally:
        await service.stop()


def hint_of(text: str) -> tuple[int, int]:
    m = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg(\d+)\.(\d+)\.m4s"', text)
    return int(m.group(1)), int(m.group(2))


async def test_every_preload_hint_becomes_a_part(live):
    """The last part of a segment is listed together with its parent, so no
    playlist ever hints a part that a keyframe then makes void (404)."""
    client, feed, out = live
    items = frames(8.0)
    fed = 0

    def feed_until(ms):
        nonlocal fed
        while fed < len(items) and items[fed].dts < ms:
            feed.feed([items[fed]])
            fed += 1

    async def drive(request):
        """Feed media 100 ms at a time until the held request returns."""
        nonlocal t
        task = asyncio.create_task(request)
        while not task.done():
            t += 100
            feed_until(t)
            await asyncio.wait([task], timeout=0.03)
        return await task

    t = 500 + 700  # frames 0..6: parts 0..1 published
    feed_until(t)
    await until(out, lambda: out.playlist is not None and out.playlist.has_media())
    text = await (await client.get(f"{BASE}/source/index.m3u8")).text()
    seen = []
    for _ in range(30):
        # As hls.js does: block on the hinted part, then fetch the next hint.
        msn, index = hint_of(text)
        r = await drive(client.get(f"{BASE}/source/index.m3u8?_HLS_msn={msn}&_HLS_part={index}"))
        assert r.status == 200
        text = await r.text()
        hint = "seg{}.{}.m4s".format(*hint_of(text))
        r = await drive(client.get(f"{BASE}/source/{hint}"))
        assert r.status == 200, (hint, seen)
        seen.append(hint)
    assert len({h.split(".")[0] for h in seen}) >= 4, seen  # several segment boundaries crossed
    assert any(h.endswith(".0.m4s") for h in seen)


async def test_viewer_count_counts_addresses_reloading_media_playlists(live):
    client, feed, out = live
    origin = client.app[HLS_ORIGIN]
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and bool(out.playlist.segments))
    assert origin.viewer_count(ROOM) == 0
    (await client.get(f"{BASE}/master.m3u8")).close()
    assert origin.viewer_count(ROOM) == 0  # the multivariant playlist alone is not watching
    for _ in range(3):
        (await client.get(f"{BASE}/source/index.m3u8")).close()
    assert origin.viewer_count(ROOM) == 1  # one address reloading is one viewer
    assert origin.viewer_count("nobody") == 0
    (await client.get("/live/nobody/source/index.m3u8")).close()  # not live: not recorded
    assert origin.viewers.counts() == {ROOM: 1}


async def test_part_far_ahead_is_404_at_once_and_not_held(live):
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and out.playlist.last_part() is not None)
    msn, _ = out.playlist.last_part()
    for name in (f"seg{msn}.{out.playlist.advance_part_limit() + 40}.m4s", f"seg{msn + 5}.0.m4s", f"seg{msn + 5}.m4s",
                 "init-999.mp4"):
        t0 = time.monotonic()
        r = await client.get(f"{BASE}/source/{name}")
        # Not held: a held request could not be answered before the blocking timeout.
        assert time.monotonic() - t0 < SETTINGS.blocking_timeout_ms / 1000, name
        assert r.status == 404, name
        assert r.headers["Cache-Control"] == f"public, max-age={SETTINGS.playlist_target_duration_s}"
        assert (await r.json())["error"] == "not_found"


async def test_file_that_left_the_window_is_served_from_disk_until_deleted(tmp_path, configs):
    settings = dataclasses.replace(SETTINGS, window_segments=3, delete_grace_s=60)
    _, service, client, feed, out = await start_origin(tmp_path, settings)
    try:
        feed.feed([StreamStart(1, 1), *configs, *frames(6.0)])
        await until(out, lambda: out.playlist is not None and out.playlist.media_sequence >= 2)
        assert not out.playlist.has_file("seg0.m4s")  # slid out: the model does not vouch for it
        r = await client.get(f"{BASE}/source/seg0.m4s")
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"]  # bis 6.2.2: still downloadable
        r = await client.get(f"{BASE}/source/seg0.1.m4s")
        assert r.status == 200
    finally:
        feed.feed([None])
        await service.stop()
        await client.close()


async def test_vanished_file_is_a_404_no_cache_keeps(live):
    """A file the model vouches for but that is gone (a restarted packager
    clearing the directory): aiohttp's 404 must not carry `immutable`."""
    client, feed, out = live
    feed.feed(frames(1.5))
    await until(out, lambda: out.playlist is not None and bool(out.playlist.segments))
    name = out.playlist.segments[0].uri
    assert out.playlist.has_file(name)
    client.app[HLS_ORIGIN].service.store.delete(ROOM, "source", name)
    r = await client.get(f"{BASE}/source/{name}")
    assert r.status == 404 and r.headers["Cache-Control"] == "no-cache"


async def eventually(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def start_ended_live(tmp_path, configs, keep_s):
    """A live that publishes 2.5 s and ends for good, with ended_keep_s=keep_s."""
    settings = dataclasses.replace(SETTINGS, ended_keep_s=keep_s)
    store, service, client, feed, out = await start_origin(tmp_path, settings)
    feed.feed([StreamStart(1, 1), *configs, *frames(2.5), StreamEnd(1, 1, "unpublish"), None])
    await until(out, lambda: out.done)
    await asyncio.sleep(0.1)  # the packager task returns right after `done`
    return store, service, client, out


async def test_ended_live_files_are_removed_after_the_keep_time(tmp_path, configs):
    store, service, client, out = await start_ended_live(tmp_path, configs, keep_s=2.0)
    files = FileOutputs(tmp_path / "hls", service.settings)  # an origin in another process
    await files.start()
    feed2 = None
    try:
        next_msn = out.playlist.next_msn
        r = await client.get(f"{BASE}/source/index.m3u8")
        assert r.status == 200 and m3u8.loads(await r.text()).is_endlist  # kept a while (bis 6.2.1)
        assert len(store.list(ROOM, "source")) > 5
        await eventually(lambda: "source" in files.outputs(ROOM))
        await eventually(lambda: not service.outputs(ROOM))
        # The deletes run in a thread after the output is dropped.
        await eventually(lambda: store.list(ROOM, "source") == ["state.json"])
        state = json.loads(store.read(ROOM, "source", "state.json"))
        assert state["next_msn"] == next_msn and "playlist" not in state
        for path in ("/source/index.m3u8", "/master.m3u8", "/source/seg0.m4s"):
            r = await client.get(BASE + path)
            assert r.status == 404 and (await r.json())["error"] == "not_live", path
        await eventually(lambda: not files.outputs(ROOM))  # the other process's origin follows state.json
        # The room's next publish continues the media sequence.
        feed2 = FeedConsumer()
        out2 = service.start_rendition(ROOM, "source", feed2)
        feed2.feed([StreamStart(1, 2), *configs, *frames(1.5)])
        await until(out2, lambda: out2.playlist is not None and bool(out2.playlist.segments))
        assert out2.playlist.segments[0].msn == next_msn
    finally:
        if feed2 is not None:
            feed2.feed([None])
        await service.stop()
        await client.close()
        await files.stop()


async def test_a_new_publish_within_the_keep_time_cancels_the_removal(tmp_path, configs):
    store, service, client, out = await start_ended_live(tmp_path, configs, keep_s=1.0)
    feed2 = FeedConsumer()
    try:
        out2 = service.start_rendition(ROOM, "source", feed2)
        feed2.feed([StreamStart(1, 2), *configs, *frames(1.5)])
        await until(out2, lambda: out2.playlist is not None and bool(out2.playlist.segments))
        await asyncio.sleep(1.3)  # past the first live's keep time
        assert service.outputs(ROOM)["source"] is out2 and not out2.done
        assert "index.m3u8" in store.list(ROOM, "source")
        r = await client.get(f"{BASE}/source/index.m3u8")
        assert r.status == 200 and not m3u8.loads(await r.text()).is_endlist
        assert (await client.get(f"{BASE}/source/{out2.playlist.segments[0].uri}")).status == 200
    finally:
        feed2.feed([None])
        await service.stop()
        await client.close()


async def test_a_new_hub_while_the_last_live_writes_its_endlist(tmp_path, configs):
    """The room goes live again while the previous packager is still writing
    its ENDLIST: the new live is packaged (after it), not ignored."""
    from ingest.hub import StreamHub

    service = PackagingService(SegmentStore(tmp_path / "hls"), SETTINGS)
    try:
        hub = StreamHub(7)
        service.start("hubroom", hub)
        for item in [StreamStart(7, 1), *configs, *frames(2.5)]:
            hub.publish(item)
        first = service.outputs("hubroom")["source"]
        await until(first, lambda: first.playlist is not None and len(first.playlist.segments) >= 1)
        hub.publish(StreamEnd(7, 1, "unpublish"))
        hub.close()
        hub2 = StreamHub(7)
        service.start("hubroom", hub2)  # at once: the first packager has not finished
        for item in [StreamStart(7, 2), *configs, *frames(2.5)]:
            hub2.publish(item)
        await until(first, lambda: first.done)
        second = service.outputs("hubroom")["source"]
        assert second is not first
        await until(second, lambda: second.playlist is not None and len(second.playlist.segments) >= 1)
        assert second.playlist.segments[0].msn == first.playlist.next_msn  # MSNs continue
        service.start("hubroom", hub2)  # the same live again: nothing new
        assert service.outputs("hubroom")["source"] is second
        hub2.close()
    finally:
        await service.stop()
