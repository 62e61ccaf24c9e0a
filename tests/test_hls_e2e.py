"""LL-HLS end to end: real encoders (the ffmpeg CLI and GStreamer) publish
over RTMP to the real server, a player-like client reloads the media
playlist with blocking requests and fetches every part and segment, and the
result is checked rule by rule against draft-pantos-hls-rfc8216bis (§4.4.3,
§4.4.4.9, §4.4.5, §6.2.2, §6.2.5) and the Apple authoring spec; see
shared/reference/ll-hls.md. The media itself is checked with PyAV.

One publish per encoder is captured once per module (`capture`) and shared by
the rule tests; tests that need the server to react to a request (blocking
reloads, delta updates) run their own publish.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

import aiohttp
import av
import m3u8
import pytest
from multidict import CIMultiDict

from livecast.app import Livecast
from storage.demo import ensure_demo
from support.publishers import start_ffmpeg, start_gstreamer, stop_process

from conftest import rtmp_url, server_config

pytestmark = pytest.mark.slow

SECONDS = 3
FPS = 30
SOURCE_FRAMES = SECONDS * FPS  # ffmpeg -t 3 at 30 fps; GStreamer num-buffers=90
TD = 4  # EXT-X-TARGETDURATION of the default settings (max_segment_ms 4000)
PTD = 0.25  # hls.part_target_ms 250
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


@dataclass
class Response:
    url: str
    status: int
    headers: CIMultiDict
    body: bytes
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def playlist(self) -> m3u8.M3U8:
        return m3u8.loads(self.text)


@dataclass
class Capture:
    encoder: str
    reloads: list[Response] = field(default_factory=list)  # every media playlist answer, in order
    files: dict[str, Response] = field(default_factory=dict)  # init, parts, segments by URI
    master: Response | None = None
    final: Response | None = None  # a plain GET after ENDLIST
    conditional_status: int = 0  # If-None-Match with the final playlist's ETag


async def fetch(http: aiohttp.ClientSession, url: str, **kwargs) -> Response:
    started = time.monotonic()
    async with http.get(url, **kwargs) as r:
        body = await r.read()
        return Response(url, r.status, CIMultiDict(r.headers), body, time.monotonic() - started)


def msn_of(pl: m3u8.M3U8, index: int) -> int:
    skipped = (pl.skip.skipped_segments or 0) if pl.skip else 0
    return pl.media_sequence + skipped + index


def last_part(pl: m3u8.M3U8) -> tuple[int, int, bool]:
    """(MSN, index, parent complete) of the newest listed part."""
    for i in range(len(pl.segments) - 1, -1, -1):
        seg = pl.segments[i]
        if seg.parts:
            return msn_of(pl, i), len(seg.parts) - 1, seg.uri is not None
    raise AssertionError("no part listed")


def next_part(pl: m3u8.M3U8) -> tuple[int, int]:
    msn, index, _ = last_part(pl)
    return msn, index + 1  # past the parent's last part means part 0 of the next (bis 6.2.5.2)


async def play(http: aiohttp.ClientSession, playlist_url: str, cap: Capture, *, timeout: float = 40) -> None:
    """Like a player: blocking reloads for the next part, every listed file fetched once."""
    base = playlist_url.rsplit("/", 1)[0]
    deadline = time.monotonic() + timeout
    r = await fetch(http, playlist_url)
    while r.status != 200:
        assert time.monotonic() < deadline, "the playlist never appeared"
        await asyncio.sleep(0.05)
        r = await fetch(http, playlist_url)
    while True:
        assert r.status == 200, (r.status, r.text)
        cap.reloads.append(r)
        pl = r.playlist
        uris = [s.init_section.uri for s in pl.segments if s.init_section]
        for seg in pl.segments:
            uris += [p.uri for p in seg.parts] + ([seg.uri] if seg.uri else [])
        for uri in uris:
            if uri not in cap.files:
                cap.files[uri] = await fetch(http, f"{base}/{uri}")
        if pl.is_endlist:
            return
        assert time.monotonic() < deadline, "no ENDLIST in time"
        msn, part = next_part(pl)
        r = await fetch(http, f"{playlist_url}?_HLS_msn={msn}&_HLS_part={part}")


async def _capture(encoder: str, data_dir) -> Capture:
    app = Livecast(server_config(data_dir))
    await app.start()
    cap = Capture(encoder)
    proc = None
    try:
        demo = await ensure_demo(app.db, app.data_dir)
        url = rtmp_url(app, demo.stream_key)
        if encoder == "ffmpeg":
            proc = await start_ffmpeg(url, seconds=SECONDS, gop=FPS)
        else:
            proc = await start_gstreamer(url, buffers=SOURCE_FRAMES)
        live = f"{app.public_url}/live/{demo.room_id}"
        async with aiohttp.ClientSession() as http:
            player = asyncio.create_task(play(http, f"{live}/source/index.m3u8", cap))
            while not cap.reloads and not player.done():
                await asyncio.sleep(0.05)
            cap.master = await fetch(http, f"{live}/master.m3u8")  # while on air
            await player
            cap.final = await fetch(http, f"{live}/source/index.m3u8")
            cap.conditional_status = (await fetch(http, f"{live}/source/index.m3u8",
                                                  headers={"If-None-Match": cap.final.headers["ETag"]})).status
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc is not None:
            await stop_process(proc)
        await app.stop()
    return cap


@pytest.fixture(scope="module", params=["ffmpeg", "gstreamer"])
def capture(request, tmp_path_factory) -> Capture:
    # Sync on purpose: one publish shared by every rule test of this encoder.
    return asyncio.run(_capture(request.param, tmp_path_factory.mktemp(request.param)))


def playlists(cap: Capture) -> list[m3u8.M3U8]:
    return [r.playlist for r in cap.reloads]


def listed_parts(cap: Capture) -> dict[str, bool]:
    """URI -> INDEPENDENT=YES, over every reload."""
    flags: dict[str, bool] = {}
    for pl in playlists(cap):
        for seg in pl.segments:
            for p in seg.parts:
                independent = p.independent == "YES"
                assert flags.setdefault(p.uri, independent) == independent, f"{p.uri} changed INDEPENDENT"
    return flags


def demux(init: bytes, media: bytes) -> tuple[list[av.Packet], list[av.VideoFrame], int]:
    """(video packets, decoded video frames, decoded audio samples) of init + media."""
    import io

    packets, frames, audio = [], [], 0
    with av.open(io.BytesIO(init + media), format="mp4") as c:
        for packet in c.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                packets.append(packet)
                frames += packet.decode()
            elif packet.stream.type == "audio":
                audio += sum(f.samples for f in packet.decode())
        v = c.streams.video[0]
        frames += v.codec_context.decode(None)  # flush
    return packets, frames, audio


def init_for(cap: Capture, uri: str) -> bytes:
    for pl in playlists(cap) + [cap.final.playlist]:
        current = None  # EXT-X-MAP applies until the next one
        for seg in pl.segments:
            current = seg.init_section.uri if seg.init_section else current
            if current and (uri == seg.uri or uri in [p.uri for p in seg.parts]):
                return cap.files[current].body
    raise AssertionError(f"{uri} not listed")


# --------------------------------------------------------------- rule tests

def test_target_duration_is_never_exceeded(capture):
    for pl in playlists(capture) + [capture.final.playlist]:
        assert pl.target_duration == TD  # constant for the playlist's life (bis 6.2.1)
        for seg in pl.segments:
            if seg.uri is not None:
                assert 0 < seg.duration <= pl.target_duration, seg.uri
    assert capture.final.playlist.is_endlist


def test_part_durations_respect_part_target(capture):
    checked = 0
    for pl in playlists(capture):
        assert pl.part_inf.part_target == PTD
        # bis 4.4.3.8 / Apple 14.3: PART-HOLD-BACK >= 3 x PTD; CAN-SKIP-UNTIL >= 6 x TD.
        assert pl.server_control.part_hold_back >= 3 * PTD
        assert pl.server_control.can_skip_until >= 6 * TD
        assert pl.server_control.can_block_reload == "YES"
        for seg in pl.segments:
            for i, p in enumerate(seg.parts):
                assert 0 < p.duration <= PTD, p.uri
                # bis 4.4.4.9: >= 85 % of PTD except independent parts and
                # the last part of a parent.
                last_of_parent = seg.uri is not None and i == len(seg.parts) - 1
                if seg.uri is not None and not last_of_parent and p.independent != "YES":
                    assert p.duration >= 0.85 * PTD, p.uri
                checked += 1
    assert checked > 20


def test_media_sequence_numbers_are_continuous_across_reloads(capture):
    all_pl = playlists(capture) + [capture.final.playlist]
    assert len(all_pl) >= 5  # several blocking reloads happened
    seen: set[int] = set()
    prev_seq, prev_last = -1, (-1, -1)
    for pl in all_pl:
        assert pl.media_sequence >= prev_seq
        prev_seq = pl.media_sequence
        for i, seg in enumerate(pl.segments):
            msn = msn_of(pl, i)
            if seg.uri is not None:
                assert seg.uri == f"seg{msn}.m4s"
                seen.add(msn)
            assert [p.uri for p in seg.parts] == [f"seg{msn}.{j}.m4s" for j in range(len(seg.parts))]
        last = last_part(pl)[:2]
        assert last >= prev_last  # the playlist never goes back
        prev_last = last
    assert sorted(seen) == list(range(min(seen), max(seen) + 1))
    assert min(seen) == 0  # a fresh room starts at MSN 0
    final = capture.final.playlist
    assert [msn_of(final, i) for i in range(len(final.segments))] == sorted(seen)


def test_independent_exactly_on_parts_starting_with_a_keyframe(capture):
    flags = listed_parts(capture)
    assert any(flags.values()) and not all(flags.values())
    for uri, independent in flags.items():
        packets, frames, _ = demux(init_for(capture, uri), capture.files[uri].body)
        assert packets, uri
        # The demuxer reads the sync flag from the part's trun sample flags.
        assert packets[0].is_keyframe == independent, uri
        if independent:
            # ... and the part really decodes on its own from an IDR.
            assert frames and frames[0].key_frame, uri
            assert len(frames) == len(packets), uri


def test_preload_hint_names_the_next_part(capture):
    live = [pl for pl in playlists(capture) if not pl.is_endlist]
    assert len(live) >= 5
    for k, pl in enumerate(live):
        assert pl.preload_hint is not None and pl.preload_hint.hint_type == "PART"
        msn, index, complete = last_part(pl)
        expected = f"seg{msn + 1}.0.m4s" if complete else f"seg{msn}.{index + 1}.m4s"
        assert pl.preload_hint.uri == expected
        if k + 1 < len(live):
            # The next reload asked for exactly that part: it lists it, or,
            # when a keyframe closed the parent first (the packager cannot
            # know in advance), part 0 of the next segment (bis 6.2.5.2).
            later = [p.uri for s in live[k + 1].segments for p in s.parts]
            assert expected in later or (not complete and f"seg{msn + 1}.0.m4s" in later
                                         and f"seg{msn}.m4s" in [s.uri for s in live[k + 1].segments])
    assert capture.final.playlist.preload_hint is None  # no hint after ENDLIST


def test_master_playlist_describes_the_variant(capture):
    m = capture.master
    assert m.status == 200 and m.headers["Content-Type"] == PLAYLIST_TYPE
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in m.text
    (variant,) = m.playlist.playlists
    info = variant.stream_info
    assert variant.uri == "source/index.m3u8"
    assert 20_000 < info.bandwidth < 20_000_000
    assert 0 < info.average_bandwidth <= info.bandwidth
    assert re.fullmatch(r"avc1\.[0-9a-fA-F]{6},mp4a\.40\.2", info.codecs), info.codecs
    assert info.resolution == (320, 240)
    assert abs(info.frame_rate - FPS) < 0.5


def test_every_part_and_segment_decodes(capture):
    final = capture.final.playlist
    for seg in final.segments:
        init = capture.files[seg.init_section.uri].body
        packets, frames, audio = demux(init, capture.files[seg.uri].body)
        assert packets and len(frames) == len(packets), seg.uri
        assert audio > 0, seg.uri
        # The parent segment carries exactly the samples of its parts (bis 3.2).
        parts = [capture.files[p.uri].body for p in seg.parts]
        if parts:
            assert b"".join(parts) == capture.files[seg.uri].body
    for uri in listed_parts(capture):
        packets, _, _ = demux(init_for(capture, uri), capture.files[uri].body)
        assert packets, uri


def test_whole_stream_has_every_source_frame_in_order(capture):
    final = capture.final.playlist
    (init_uri,) = {s.init_section.uri for s in final.segments}
    body = b"".join(capture.files[s.uri].body for s in final.segments)
    packets, frames, audio = demux(capture.files[init_uri].body, body)
    assert len(frames) == SOURCE_FRAMES
    times = [f.pts * f.time_base for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    # RTMP carries ms: each frame is within 2 ms of the source's i/30 s grid.
    for i, t in enumerate(times):
        assert abs(float(t - times[0]) - i / FPS) < 0.002, (i, float(t))
    assert audio / 48000 > SECONDS - 0.5


def test_headers_over_http(capture):
    for r in capture.reloads:
        h = r.headers
        assert h["Content-Type"] == PLAYLIST_TYPE
        assert h["Access-Control-Allow-Origin"] == "*"
        assert h["ETag"].startswith('"') and "Last-Modified" in h
        assert h.get("Content-Encoding") == "gzip"  # aiohttp asks for it; Apple 10.1
        if r.playlist.is_endlist:
            assert h["Cache-Control"] == f"public, max-age={TD}"  # over, but the room may come back
        elif "_HLS_msn=" in r.url:
            assert h["Cache-Control"] == f"public, max-age={6 * TD}"  # App. B.1: 6 x TD
    assert capture.reloads[0].headers["Cache-Control"] == "public, max-age=1"
    assert capture.final.headers["Cache-Control"] == f"public, max-age={TD}"
    assert capture.conditional_status == 304
    for uri, r in capture.files.items():
        assert r.status == 200, uri
        assert r.headers["Content-Type"] == ("video/mp4" if uri.startswith("init-") else "video/iso.segment")
        assert "immutable" in r.headers["Cache-Control"]
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "ETag" in r.headers


# ------------------------------------------------------ server reactions

async def wait_playlist(http, url: str, timeout: float = 20) -> m3u8.M3U8:
    deadline = time.monotonic() + timeout
    while True:
        r = await fetch(http, url)
        if r.status == 200:
            return r.playlist
        assert time.monotonic() < deadline, "the playlist never appeared"
        await asyncio.sleep(0.05)


def playlist_url(server, room_id: str) -> str:
    return f"{server.public_url}/live/{room_id}/source/index.m3u8"


@contextlib.asynccontextmanager
async def publishing(server, key: str, **ffmpeg_options):
    """The ffmpeg CLI publishing to the live, and an HTTP client; the
    publisher is stopped on the way out."""
    proc = await start_ffmpeg(rtmp_url(server, key), **ffmpeg_options)
    try:
        async with aiohttp.ClientSession() as http:
            yield proc, http
    finally:
        await stop_process(proc)


async def test_blocking_reload_answers_when_the_part_is_written(server, live):
    _, room_id, key = live
    url = playlist_url(server, room_id)
    async with publishing(server, key, seconds=8, gop=FPS) as (_proc, http):
        pl = await wait_playlist(http, url)
        parts = {}
        for _ in range(6):
            # The preload hint is by definition not listed yet: the request
            # must be held until the packager lists it. The blocking timeout
            # is 3 x TD = 12 s and ends in a 503, so a 200 listing the hint
            # was released by the part being written.
            hint = pl.preload_hint.uri
            assert hint not in [p.uri for s in pl.segments for p in s.parts]
            msn, index = map(int, re.fullmatch(r"seg(\d+)\.(\d+)\.m4s", hint).groups())
            r = await fetch(http, f"{url}?_HLS_msn={msn}&_HLS_part={index}")
            assert r.status == 200
            pl = r.playlist
            assert hint in [p.uri for s in pl.segments for p in s.parts]
            # Listed means complete: the part is served at once (not held
            # like a hinted one) and whole: a moof+mdat fragment.
            part = await fetch(http, url.rsplit("/", 1)[0] + "/" + hint)
            assert part.status == 200 and part.elapsed < 3 * TD
            assert part.body[4:8] == b"moof" and b"mdat" in part.body
            assert int.from_bytes(part.body[:4], "big") < len(part.body)
            parts[(msn, index)] = part.body
        # Each part fetched when first listed is byte for byte the slice of
        # its parent segment, once that segment is complete.
        base = url.rsplit("/", 1)[0]
        newest = max(parts)[0]
        r = await fetch(http, f"{url}?_HLS_msn={newest}")  # held until segment `newest` is complete
        assert r.status == 200
        pl = r.playlist
        checked = 0
        for i, seg in enumerate(pl.segments):
            mine = {n: body for (m, n), body in parts.items() if m == msn_of(pl, i)}
            if mine:
                assert seg.uri, "the parent segment is not complete"
                whole = (await fetch(http, f"{base}/{seg.uri}")).body
                offsets = [0]
                for part_ in seg.parts:
                    offsets.append(offsets[-1] + len((await fetch(http, f"{base}/{part_.uri}")).body))
                assert offsets[-1] == len(whole)
                for n, body in mine.items():
                    assert whole[offsets[n]:offsets[n + 1]] == body
                    checked += 1
        assert checked == len(parts)
        last_msn, _, _ = last_part(pl)
        far = await fetch(http, f"{url}?_HLS_msn={last_msn + 3}")
        assert far.status == 400 and far.elapsed < 3 * TD  # bis 6.2.5.2: > last MSN + 2, refused, not held
        alone = await fetch(http, f"{url}?_HLS_part=1")
        assert alone.status == 400  # _HLS_part without _HLS_msn: MUST be 400


@pytest.mark.server_config(hls={"end_grace_s": 1.0})
async def test_held_request_is_released_when_the_stream_ends(server, live):
    _, room_id, key = live
    url = playlist_url(server, room_id)
    async with publishing(server, key, seconds=2, gop=FPS) as (proc, http):
        pl = await wait_playlist(http, url)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        # Ask for a segment after the open one: the publisher is gone, so
        # only the end of the stream (ENDLIST after end_grace_s=1) can answer.
        msn, _, _ = last_part(pl)
        started = time.monotonic()
        r = await fetch(http, f"{url}?_HLS_msn={msn + 1}")
        assert r.status == 200
        assert r.playlist.is_endlist
        # Released by the end (a 200 with ENDLIST), not by the 3 x TD = 12 s
        # blocking timeout, which would be a 503.
        assert time.monotonic() - started < 3 * TD - 2


@pytest.mark.server_config(hls={"target_duration_ms": 1000, "window_segments": 40, "end_grace_s": 30.0})
async def test_skip_gives_a_delta_update_once_the_playlist_is_long_enough(server, live):
    _, room_id, key = live
    # 30 s of 1 s segments, sent faster than real time: with a 1 s target
    # the cap is 2 s, so TD = 2 and CAN-SKIP-UNTIL = 12 s; the oldest
    # segments can be skipped.
    proc = await start_ffmpeg(rtmp_url(server, key), seconds=30, rate=15, gop=15, realtime=False)
    url = playlist_url(server, room_id)
    try:
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        async with aiohttp.ClientSession() as http:
            # The publisher is gone but within the grace: no ENDLIST yet, and
            # the last segment is complete once its StreamEnd is packaged.
            deadline = time.monotonic() + 10
            while True:
                full = await fetch(http, url)
                pl = full.playlist
                if full.status == 200 and pl.segments and pl.segments[-1].uri and pl.preload_hint.uri.endswith(".0.m4s"):
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            delta = await fetch(http, f"{url}?_HLS_skip=YES")
    finally:
        await stop_process(proc)
    assert delta.status == 200 and not pl.is_endlist
    d = delta.playlist
    td = pl.target_duration
    assert td == 2
    durations = [s.duration for s in pl.segments]
    assert sum(durations) > 6 * td + 1
    ends = [sum(durations[: i + 1]) for i in range(len(durations))]
    expected = sum(1 for e in ends[:-1] if ends[-1] - e >= 6 * td - 1e-4)
    assert expected >= 3
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta.text and d.skip.skipped_segments == expected
    assert d.version >= 9  # EXT-X-SKIP needs version 9 (bis §8)
    assert d.media_sequence == pl.media_sequence  # still names the first, skipped segment
    assert [s.uri for s in d.segments] == [s.uri for s in pl.segments[expected:]]
    assert [s.uri for s in d.segments] == [f"seg{msn_of(d, i)}.m4s" for i in range(len(d.segments))]
    # A plain reload is not a delta update.
    assert "#EXT-X-SKIP" not in full.text
