"""An origin fed by files another packager writes (origin/files.py) and the
`livecast origin` process (livecast/origin_app.py): the playlist state round
trip, watchdog wake-ups of blocking reloads, and a real ffmpeg publish
served by a second origin reading the same data dir."""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import aiohttp
import av
import m3u8
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings, strategies as st
from watchdog.utils import BaseThread

import hls_media
from hls_media import FeedConsumer
from conftest import rtmp_url
from ingest.frames import AUDIO, VIDEO, Frame, StreamEnd, StreamStart
from livecast.origin_app import OriginServer
from origin.files import FileOutputs
from origin.hls import add_hls_routes
from storage.segments import SegmentStore
from support.publishers import start_ffmpeg, stop_process
from transcoder.hls_settings import HlsSettings
from transcoder.packaging import PackagingService
from transcoder.playlist import Block, MediaPlaylist, init_uri

TS = 90000
PT = 22500  # 250 ms


# ------------------------------------------------------------ state round trip

OPS = st.lists(st.one_of(
    st.tuples(st.just("part"), st.integers(1, 2 * PT), st.booleans(), st.integers(0, 5000)),
    st.just(("segment",)), st.just(("disc",)), st.just(("map",)),
), max_size=80)


def replay(ops, first_msn: int, window: int) -> MediaPlaylist:
    pl = MediaPlaylist(timescale=TS, target_duration_s=2, part_target=PT, window_segments=window,
                       first_msn=first_msn, discontinuity_sequence=first_msn % 3)
    pdt = 1_700_000_000_000
    for op in ops:
        if op[0] == "map" or pl.map_uri is None:
            pl.set_map(init_uri(pl.next_msn))
        if op[0] == "part":
            pdt += op[3]
            pl.add_part(op[1], op[2], pdt_ms=pdt)
        elif op[0] == "segment" and pl.open is not None:
            pl.complete_segment()
        elif op[0] == "disc":
            pl.mark_discontinuity()
    return pl


def observable(pl: MediaPlaylist) -> tuple:
    probes = [(m, p) for m in range(max(0, pl.media_sequence - 1), pl.next_msn + 4) for p in (None, 0, 3, 9)]
    return (pl.render(), pl.render(skip=True), pl.last_part(), pl.preload_hint(), pl.has_media(),
            [pl.block(m, p) for m, p in probes], [pl.part_published(m, p or 0) for m, p in probes])


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(0, 10**6), st.integers(3, 8), st.booleans())
def test_playlist_state_round_trip(ops, first_msn, window, ended):
    pl = replay(ops, first_msn, window)
    if ended:
        pl.end()
    state = json.loads(json.dumps(pl.to_state()))  # it must survive JSON
    back = MediaPlaylist.from_state(state)
    assert back.to_state() == state
    assert observable(back) == observable(pl)
    if not ended:  # the copy goes on exactly like the original
        for p in (pl, back):
            p.set_map(init_uri(p.next_msn))
            p.add_part(PT, True, pdt_ms=1_800_000_000_000)
            p.complete_segment()
        assert observable(back) == observable(pl)


@pytest.mark.parametrize("path, value", [
    (("v",), 2), (("timescale",), 0), (("next_msn",), -1), (("next_msn",), "7"), (("segments",), None),
    (("segments", 0, "parts"), [[1]]), (("segments", 0, "map"), 'x"\n#EXT-X-ENDLIST'), (("open",), 5),
    (("segments", 0, "pdt_ms"), 1.5),
])
def test_malformed_playlist_state_is_value_error(path, value):
    pl = replay([("part", PT, True, 0), ("segment",), ("part", PT, True, 0)], 4, 6)
    state = pl.to_state()
    target = state
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    with pytest.raises(ValueError):
        MediaPlaylist.from_state(state)
    missing = pl.to_state()
    del missing[path[0]]
    with pytest.raises(ValueError):
        MediaPlaylist.from_state(missing)


# ------------------------------------- FileOutputs next to an in-process packager

ROOM = "room7"
FAST = HlsSettings(target_duration_ms=1000, part_target_ms=250, max_segment_ms=1000, window_segments=10)


def frames(seconds: float, t0: int = 500, fps: int = 10):
    n = int(seconds * fps)
    out = [Frame(VIDEO, "h264", t0 + i * 100, t0 + i * 100, i % 10 == 0, b"\0\0\0\x02\x65\x88" + bytes(300))
           for i in range(n)]
    out += [Frame(AUDIO, "aac", t0 + i * 1024 * 1000 // 48000, t0 + i * 1024 * 1000 // 48000, True, b"\x21" * 40)
            for i in range(int(seconds * 48000) // 1024)]
    return hls_media.interleave(out)


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, BaseThread)]


@pytest.fixture
async def pair(tmp_path):
    """A packager (PackagingService) writing a store, and FileOutputs
    reading the same directory behind its own aiohttp origin."""
    vc, _ = hls_media.h264(0.1)
    ac, _ = hls_media.aac(0.1)
    service = PackagingService(SegmentStore(tmp_path / "hls"), FAST)
    files = FileOutputs(tmp_path / "hls", FAST)
    await files.start()
    app = web.Application()
    add_hls_routes(app, files)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    feed = FeedConsumer()
    out = service.start_rendition(ROOM, "source", feed)
    feed.feed([StreamStart(1, 1), vc, ac])
    try:
        yield client, feed, out, files
    finally:
        feed.feed([None])
        await service.stop()
        await client.close()
        await files.stop()


async def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_file_outputs_follow_the_packager(pair):
    client, feed, out, files = pair
    feed.feed(frames(3.0))
    assert await out.wait_until(lambda: out.playlist is not None and len(out.playlist.segments) >= 2, 10)
    await wait_for(feed.queue.empty)  # the packager has taken everything fed so far
    await asyncio.sleep(0.2)
    # The file side learns the same model, without being asked.
    await wait_for(lambda: files.outputs(ROOM).get("source") is not None
                   and files.outputs(ROOM)["source"].playlist.render() == out.playlist.render())
    mirror = files.outputs(ROOM)["source"]
    assert (mirror.codecs, mirror.width, mirror.height) == (out.codecs, out.width, out.height)
    assert mirror.codecs.startswith("avc1.") and not mirror.done

    # A blocking reload held by the file origin is released by the next part.
    msn, part = mirror.playlist.last_part()
    req = asyncio.create_task(client.get(f"/live/{ROOM}/source/index.m3u8?_HLS_msn={msn}&_HLS_part={part + 1}"))
    await asyncio.sleep(0.4)
    assert not req.done()
    reloads = files.reloads
    feed.feed(frames(1.0, t0=3500))
    r = await asyncio.wait_for(req, 5)
    assert r.status == 200 and files.reloads > reloads
    assert mirror.playlist.block(msn, part + 1) is Block.READY

    # The end of the live reaches the file origin as ENDLIST; no more reloads after it.
    feed.feed([StreamEnd(1, 1, "unpublish"), None])
    await wait_for(lambda: mirror.done)
    r = await client.get(f"/live/{ROOM}/source/index.m3u8")
    assert m3u8.loads(await r.text()).is_endlist
    assert (await client.get(f"/live/{ROOM}/master.m3u8")).status == 404  # offline, as in-process
    settled = files.reloads
    await asyncio.sleep(0.6)
    assert files.reloads == settled  # nothing is polled


async def test_removed_and_corrupt_state_files(pair, caplog):
    client, feed, out, files = pair
    feed.feed(frames(1.0))
    await wait_for(lambda: "source" in files.outputs(ROOM) and files.outputs(ROOM)["source"].playlist.has_media())
    mirror = files.outputs(ROOM)["source"]
    # A foreign file in the store: ignored with a warning, the last good model stays.
    store = SegmentStore(files.store.root)
    store.write(ROOM, "other", "state.json", b"{not json")
    store.write(ROOM, "huge", "state.json", b" " * (files.max_state_bytes + 1))
    await wait_for(lambda: "unusable state.json" in caplog.text and "larger than" in caplog.text)
    assert set(files.outputs(ROOM)) == {"source"}
    await wait_for(lambda: mirror.playlist.render() == out.playlist.render())  # still following
    # The room's files deleted (e.g. an operator's clean-up): no longer served.
    await asyncio.to_thread(store.delete, ROOM, "source", "state.json")
    await wait_for(lambda: files.outputs(ROOM) == {})
    assert mirror.done
    assert (await client.get(f"/live/{ROOM}/source/index.m3u8")).status == 404


async def test_stop_leaves_no_watchdog_threads(tmp_path):
    files = FileOutputs(tmp_path / "hls")
    await files.start()
    assert watchdog_threads()
    await files.stop()
    assert watchdog_threads() == []


# --------------------------------------- `livecast origin` next to `livecast serve`

async def get_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str, float]:
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as r:
        return r.status, await r.text(), time.monotonic()


HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg(\d+)\.(\d+)\.m4s"')
LISTED_PART = re.compile(r'#EXT-X-PART:[^\n]*URI="([^"]+)"')


@pytest.mark.slow
async def test_origin_server_serves_what_serve_packages(server, live):
    _live_id, room, key = live
    origin = OriginServer(server.config)  # same data dir, its own port
    await origin.start()
    proc = await start_ffmpeg(rtmp_url(server, key), seconds=5)
    try:
        main = f"http://127.0.0.1:{server.http_port}/live/{room}"
        second = f"http://127.0.0.1:{origin.http_port}/live/{room}"
        async with aiohttp.ClientSession() as http:
            # Tune in: 404 until the publisher is on (as on the main origin).
            deadline = time.monotonic() + 15
            while (got := await get_text(http, f"{second}/source/index.m3u8"))[0] != 200:
                assert got[0] == 404 and time.monotonic() < deadline, got
                await asyncio.sleep(0.1)
            text = got[1]
            same = 0
            reloads = origin.outputs.reloads
            for _ in range(8):
                msn, part = map(int, HINT.search(text).groups())
                hinted = f"seg{msn}.{part}.m4s"
                assert hinted not in LISTED_PART.findall(text)  # only hinted so far
                query = f"/source/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
                (s1, text1, _), (s2, text, _) = await asyncio.gather(
                    get_text(http, main + query), get_text(http, second + query))
                # Both answer when the part is written (a 503 would be the
                # blocking timeout): the in-process one from the packager's
                # notify, the other from the inotify event on state.json.
                assert s1 == s2 == 200, (text1, text)
                for answer in (text1, text):  # held until the hinted part (or the next segment's first) was listed
                    listed = LISTED_PART.findall(answer)
                    assert hinted in listed or f"seg{msn + 1}.0.m4s" in listed, answer
                if HINT.search(text1) and HINT.search(text1).groups() == HINT.search(text).groups():
                    assert text1 == text  # same MSN and part: the same playlist, byte for byte
                    same += 1
            assert same >= 4
            assert origin.outputs.reloads > reloads  # the second origin followed the files it was told about

            status, master, _ = await get_text(http, f"{second}/master.m3u8")
            _, master1, _ = await get_text(http, f"{main}/master.m3u8")
            (v2,), (v1,) = m3u8.loads(master).playlists, m3u8.loads(master1).playlists
            assert (v2.stream_info.codecs, v2.stream_info.resolution) == (v1.stream_info.codecs, (320, 240))

            # The publisher stops; after the grace period the live ends and
            # the origin process shows ENDLIST, waking held requests.
            await asyncio.wait_for(proc.wait(), 30)
            deadline = time.monotonic() + 20
            while "#EXT-X-ENDLIST" not in text:
                assert time.monotonic() < deadline, "no ENDLIST"
                msn, part = map(int, HINT.search(text).groups())
                status, text, _ = await get_text(http, f"{second}/source/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
                assert status in (200, 503)
                if status == 503:
                    _, text, _ = await get_text(http, f"{second}/source/index.m3u8")
            _, final1, _ = await get_text(http, f"{main}/source/index.m3u8")
            assert final1 == text
            assert (await get_text(http, f"{second}/master.m3u8"))[0] == 404
            pl = m3u8.loads(text)
            seg = [s for s in pl.segments if s.uri][-1]  # the last complete segment
            async with http.get(f"{second}/source/{pl.segments[0].init_section.uri}") as r:
                init = await r.read()
            async with http.get(f"{second}/source/{seg.uri}") as r:
                assert r.headers["Content-Type"] == "video/iso.segment"
                media = await r.read()
            with av.open(io.BytesIO(init + media)) as container:
                decoded = [f for f in container.decode(video=0)]
            assert len(decoded) >= 10 and decoded[0].width == 320

            status, health, _ = await get_text(http, f"http://127.0.0.1:{origin.http_port}/healthz")
            assert status == 200 and json.loads(health)["role"] == "origin"
            status, page, _ = await get_text(http, f"http://127.0.0.1:{origin.http_port}/watch/{room}")
            assert status == 200 and room in page
        settled = origin.outputs.reloads
        await asyncio.sleep(0.6)
        assert origin.outputs.reloads == settled  # woken by events only, never polling
    finally:
        await stop_process(proc)
        await origin.stop()
    assert watchdog_threads() == []


async def test_livecast_origin_command_serves_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "LIVECAST_HTTP_HOST": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecast.cli", "origin", "--data-dir", str(tmp_path / "data"), "--http-port", "0",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        line = b""
        while b"origin listening" not in line:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "the origin exited before listening"
        port = int(re.search(rb"http://127\.0\.0\.1:(\d+)", line).group(1))
        async with aiohttp.ClientSession() as http:
            status, body, _ = await get_text(http, f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and json.loads(body)["renditions"] == 0
            status, body, _ = await get_text(http, f"http://127.0.0.1:{port}/live/nobody/master.m3u8")
            assert status == 404 and json.loads(body)["error"] == "not_live"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        await stop_process(proc)
