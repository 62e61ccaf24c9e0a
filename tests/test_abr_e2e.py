"""The ABR ladder end to end, through the real server: a 1080p
publish from the ffmpeg CLI yields the configured renditions, which decode at
their sizes, keep their bitrates, start segments and independent parts at the
same media times, report each other, play in Chromium with hls.js (one forced
level switch), and survive a killed worker; thumbnails; a low source and the
passthrough switch; no worker process outlives its live or the server.

The 1080p source is encoded once per session with the ffmpeg CLI (testsrc2
plus temporal noise, so the renditions' encoders really need their bitrate)
and published with `-c copy`: the 2-core test machine cannot encode 1080p
live and transcode it at the same time. The server encodes with the x264
preset "ultrafast" for the same reason; everything else is the default ladder.
"""
from __future__ import annotations

import asyncio
import datetime
import io
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

import aiohttp
import av
import pytest

from livecast.app import Livecast
from storage.demo import ensure_demo
from support.browser import chromium_page, video_state, wait_playing
from support.publishers import start_ffmpeg, stop_process

from conftest import rtmp_url, server_config

pytestmark = pytest.mark.slow

LADDER = "720p:720:2800,480p:480:1200,360p:360:700"
TRANSCODE = {"enabled": True, "ladder": LADDER, "preset": "ultrafast",
             "thumbnail_interval_s": 1.0, "thumbnail_width": 320}
# 1920x1080 scaled to each height, aspect kept, width rounded up to even.
SIZES_1080 = {"source": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
TARGET_KBPS = {"720p": 2800, "480p": 1200, "360p": 700}
VIDEO_TRACK_ID = 1  # the packager's video track (transcoder/packager.py)
SOURCE_SECONDS = 45


# -- the source ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def source_1080p(tmp_path_factory) -> str:
    """1920x1080 30 fps, a keyframe every second, ~6 Mbit/s of hard-to-compress video, AAC."""
    path = tmp_path_factory.mktemp("abr") / "source-1080p.flv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(SOURCE_SECONDS), "-vf", "noise=alls=10:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "3M",
         "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)],
        stdin=subprocess.DEVNULL, check=True, timeout=120)
    return str(path)


async def publish_file(path: str, url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i", path, "-c", "copy", "-f", "flv", url,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- playlists ----------------------------------------------------------------------------
_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attrs(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(text)}


def parse_master(text: str) -> dict[str, dict[str, str]]:
    """rendition name -> EXT-X-STREAM-INF attributes."""
    lines = text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            out[lines[i + 1].split("/")[0]] = attrs(line.split(":", 1)[1])
    return out


def pdt_ms(text: str) -> int:
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(when.timestamp() * 1000)


@dataclass
class Segment:
    msn: int
    uri: str
    duration: float
    pdt_ms: int | None
    map_uri: str
    parts: list[tuple[str, bool]]  # (uri, INDEPENDENT)


def parse_media(text: str) -> tuple[list[Segment], list[str], list[str]]:
    """(complete segments, URIs of the parts of the segment in progress, rendition report URIs)."""
    msn, pdt, map_uri, duration = 0, None, "", 0.0
    segments, parts, reports = [], [], []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = pdt_ms(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            map_uri = attrs(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXT-X-PART:"):
            a = attrs(line.split(":", 1)[1])
            parts.append((a["URI"], a.get("INDEPENDENT") == "YES"))
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            reports.append(attrs(line.split(":", 1)[1])["URI"])
        elif line and not line.startswith("#"):
            segments.append(Segment(msn, line, duration, pdt, map_uri, parts))
            msn, pdt, parts = msn + 1, None, []
    return segments, [uri for uri, _ in parts], reports


# -- fMP4 ---------------------------------------------------------------------------------
def boxes(data: bytes, start: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    while start + 8 <= end:
        size = int.from_bytes(data[start:start + 4], "big")
        kind = data[start + 4:start + 8].decode("latin-1")
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8:start + 16], "big"), 16
        assert size >= header, "broken box"
        yield kind, start + header, start + size
        start += size


def track_fragments(data: bytes, track_id: int = VIDEO_TRACK_ID):
    """For each moof of a segment, the {box type: body offset} of the
    children of the track's traf (tfhd, tfdt, trun)."""
    for kind, body, end in boxes(data):
        if kind != "moof":
            continue
        for kind2, b2, e2 in boxes(data, body, end):
            if kind2 != "traf":
                continue
            children = {kind3: b3 for kind3, b3, _e3 in boxes(data, b2, e2)}
            if int.from_bytes(data[children["tfhd"] + 4:children["tfhd"] + 8], "big") == track_id:
                yield children


def fragment_times(data: bytes, track_id: int = VIDEO_TRACK_ID) -> list[int]:
    """baseMediaDecodeTime (tfdt) of the track in each moof of a segment, in order."""
    times = []
    for children in track_fragments(data, track_id):
        b3 = children["tfdt"]
        width = 8 if data[b3] == 1 else 4
        times.append(int.from_bytes(data[b3 + 4:b3 + 4 + width], "big"))
    return times


def demux_video(init: bytes, segments: list[bytes]) -> tuple[int, int, list[tuple[int, int]]]:
    """(video bytes, video packets, decoded picture sizes of the first segment)."""
    size = count = 0
    with av.open(io.BytesIO(init + b"".join(segments)), "r", format="mp4") as container:
        for packet in container.demux(video=0):
            if packet.size:
                size += packet.size
                count += 1
    pictures = []
    with av.open(io.BytesIO(init + segments[0]), "r", format="mp4") as container:
        for frame in container.decode(video=0):
            pictures.append((frame.width, frame.height))
    return size, count, pictures


# -- a viewer -----------------------------------------------------------------------------
@dataclass
class Viewer:
    """Follows one rendition as a player would: reloads the media playlist,
    downloads every complete segment once, notes when each part appeared."""
    http: aiohttp.ClientSession
    base: str  # .../live/<room>/<rendition>/
    segments: dict[int, Segment] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)
    arrived: dict[int, float] = field(default_factory=dict)  # msn -> monotonic time the segment was listed
    part_seen: list[float] = field(default_factory=list)  # monotonic time each new part was first listed
    inits: dict[str, bytes] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    ended: bool = False
    _parts_known: set[str] = field(default_factory=set)

    async def run(self, interval: float = 0.15) -> None:
        while not self.ended:
            async with self.http.get(self.base + "index.m3u8") as r:
                text = await r.text() if r.status == 200 else ""
            if text:
                self.ended = "#EXT-X-ENDLIST" in text
                segments, open_parts, self.reports = parse_media(text)
                now = time.monotonic()
                for uri in [u for s in segments for u, _ in s.parts] + open_parts:
                    if uri not in self._parts_known:
                        self._parts_known.add(uri)
                        self.part_seen.append(now)
                for seg in segments:
                    if seg.msn in self.segments:
                        continue
                    if seg.map_uri not in self.inits:
                        self.inits[seg.map_uri] = await self._get(seg.map_uri)
                    self.data[seg.msn] = await self._get(seg.uri)
                    self.segments[seg.msn] = seg
                    self.arrived[seg.msn] = now
            await asyncio.sleep(interval)

    async def _get(self, uri: str) -> bytes:
        async with self.http.get(self.base + uri) as r:
            assert r.status == 200, (self.base + uri, r.status)
            return await r.read()

    def since(self, t: float) -> list[int]:
        return sorted(m for m, at in self.arrived.items() if at >= t)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


async def wait_for(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


async def master_when(http, base: str, names: set[str], timeout: float = 30) -> dict:
    async def check():
        status, body = await get(http, base + "master.m3u8")
        variants = parse_master(body.decode()) if status == 200 else {}
        return variants if set(variants) == names else None
    variants = await wait_for(check, timeout)
    assert variants, f"master.m3u8 never listed exactly {sorted(names)}"
    return variants


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): count it as gone only if reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


def transcoder_status(server, room_id: str) -> dict | None:
    for stream in server.streams():
        if stream["room_id"] == room_id:
            return stream["transcoder"]
    return None


def jpeg_size(data: bytes) -> tuple[int, int]:
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9", "not a JPEG"
    dec = av.CodecContext.create("mjpeg", "r")
    (picture,) = dec.decode(av.Packet(data))
    return picture.width, picture.height


# -- the tests ----------------------------------------------------------------------------
async def check_browser_switch(page_url: str) -> None:
    async with chromium_page() as page:
        await page.goto(page_url)
        await wait_playing(page, timeout=30)
        levels = await page.evaluate("() => window.livecastPlayer.hls.levels.map(l => [l.width, l.height])")
        assert sorted(map(tuple, levels)) == sorted(SIZES_1080.values())
        index = levels.index(list(SIZES_1080["360p"]))
        await page.evaluate("""(n) => { const p = window.livecastPlayer; p.switched = [];
            p.hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => p.switched.push(d.level));
            p.hls.currentLevel = n; }""", index)
        before = await video_state(page)

        async def switched():
            state = await video_state(page)
            done = await page.evaluate("(n) => window.livecastPlayer.switched.includes(n)", index)
            return state if done and (state["w"], state["h"]) == SIZES_1080["360p"] else None
        state = await wait_for(switched, 20, step=0.25)
        assert state, f"hls.js did not switch to 360p: {await video_state(page)}"
        after = await wait_playing(page, beyond=state["t"], timeout=15)
        assert after["t"] > before["t"] + 1.0 and not after["paused"]
        assert await page.evaluate("() => window.livecastPlayer.hls.currentLevel") == index


@pytest.mark.timeout(170)
@pytest.mark.server_config(transcode=TRANSCODE)
async def test_1080p_publish_gets_the_whole_ladder(server, live, source_1080p):
    live_id, room_id, key = live
    base = f"{server.public_url}/live/{room_id}/"
    publisher = await publish_file(source_1080p, rtmp_url(server, key))
    viewers: dict[str, Viewer] = {}
    tasks: list[asyncio.Task] = []
    try:
        async with aiohttp.ClientSession() as http:
            # -- the multivariant playlist lists the source and the ladder
            variants = await master_when(http, base, set(SIZES_1080))
            for name, (w, h) in SIZES_1080.items():
                v = variants[name]
                assert v["RESOLUTION"] == f"{w}x{h}", (name, v)
                assert re.fullmatch(r"avc1\.[0-9a-fA-F]{6},mp4a\.40\.2", v["CODECS"]), v
                assert int(v["BANDWIDTH"]) >= int(v["AVERAGE-BANDWIDTH"]) > 0
                if name in TARGET_KBPS:
                    assert int(v["AVERAGE-BANDWIDTH"]) >= TARGET_KBPS[name] * 1000 * 0.6, (name, v)
            bandwidths = [int(variants[n]["BANDWIDTH"]) for n in ("source", "720p", "480p", "360p")]
            assert bandwidths == sorted(bandwidths, reverse=True)
            status = transcoder_status(server, room_id)
            assert status["state"] == "running" and status["backend"] == "pyav"
            assert [r["name"] for r in status["renditions"]] == ["720p", "480p", "360p"]
            first_pid = status["pid"]
            assert alive(first_pid)

            viewers = {name: Viewer(http, f"{base}{name}/") for name in SIZES_1080}
            tasks = [asyncio.create_task(v.run()) for v in viewers.values()]
            window_start = time.monotonic()

            # -- thumbnails: a 320 px JPEG, renewed as the picture moves, linked from the room listing
            async def thumbnail():
                status, body = await get(http, base + "thumbnail.jpg")
                return body if status == 200 else None
            first = await wait_for(thumbnail, 10)
            assert first, "no thumbnail"
            assert jpeg_size(first) == (320, 180)
            async with http.get(f"{server.public_url}/api/v1/rooms") as r:
                rooms = (await r.json())["rooms"]
            (room,) = [x for x in rooms if x["room_id"] == room_id]
            assert room["thumbnail_url"] == base + "thumbnail.jpg"
            assert room["live"] is True

            async def changed():
                body = await thumbnail()
                return body if body and body != first else None
            second = await wait_for(changed, 6)
            assert second, "the thumbnail did not change while the video moved"
            assert jpeg_size(second) == (320, 180)

            # -- a browser plays the ladder and switches level once when told to
            await check_browser_switch(f"{server.public_url}/watch/{room_id}")

            # -- at least 20 s of every rendition for the bitrate and alignment checks
            await asyncio.sleep(max(0.0, window_start + 22 - time.monotonic()))
            measured = {name: dict(v.data) for name, v in viewers.items()}
            segments = {name: dict(v.segments) for name, v in viewers.items()}

            # -- killing the worker while viewers watch: the source goes on, the ladder comes back
            kill_at = time.monotonic()
            os.kill(first_pid, 9)

            async def restarted():
                s = transcoder_status(server, room_id)
                return s if s["restarts"] == 1 and s["pid"] and s["pid"] != first_pid else None
            status = await wait_for(restarted, 10)
            assert status, transcoder_status(server, room_id)
            assert status["state"] == "running" and alive(status["pid"])
            assert not alive(first_pid)

            async def ladder_back():
                return all(len(v.since(kill_at + 1.0)) >= 2 for v in viewers.values())
            assert await wait_for(ladder_back, 15), {n: v.since(kill_at) for n, v in viewers.items()}
            back_at = time.monotonic()
            # The source goes on while the ladder is down and restarts: new
            # source parts keep being listed between the kill and the moment
            # every rendition is back (that takes whole segments, so a live
            # source lists several parts in it).
            source_seen = viewers["source"].part_seen
            during = [t for t in source_seen if kill_at < t < back_at]
            assert len(during) >= 2, (kill_at, back_at, [t for t in source_seen if t >= kill_at - 1])
            new_source = [viewers["source"].segments[m] for m in viewers["source"].since(kill_at - 2)]
            for a, b in zip(new_source, new_source[1:]):
                # Media continues without a hole: each segment starts where the last ended.
                assert b.msn == a.msn + 1 and abs(b.pdt_ms - a.pdt_ms - a.duration * 1000) <= 2, (a, b)
            assert await wait_for(lambda: _masters_lists(http, base, set(SIZES_1080)), 10)
    finally:
        await stop_process(publisher)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- each rendition decodes at its size and keeps its bitrate (20 s, first segment skipped)
    for name, data in measured.items():
        msns = sorted(data)[1:]
        assert len(msns) >= 8, (name, msns)
        segs = [segments[name][m] for m in msns]
        init = viewers[name].inits[segs[0].map_uri]
        assert all(s.map_uri == segs[0].map_uri for s in segs)
        video_bytes, packets, pictures = demux_video(init, [data[m] for m in msns])
        seconds = sum(s.duration for s in segs)
        assert seconds >= 15, (name, seconds)
        assert abs(packets - seconds * 30) <= 3, (name, packets, seconds)  # the source frame rate
        assert pictures and set(pictures) == {SIZES_1080[name]}, (name, set(pictures))
        if name in TARGET_KBPS:
            kbps = video_bytes * 8 / seconds / 1000
            assert abs(kbps - TARGET_KBPS[name]) <= 0.2 * TARGET_KBPS[name], (name, kbps, seconds)

    # -- each media playlist reports the others
    for name, viewer in viewers.items():
        assert sorted(viewer.reports) == sorted(f"../{o}/index.m3u8" for o in SIZES_1080 if o != name), viewer.reports

    # -- the final unpublish (after the end grace) stops the worker: no process is left
    async def ended():
        s = transcoder_status(server, room_id)
        return s is None or s["state"] == "ended"
    assert await wait_for(ended, 15)
    pids = server._transcoders[room_id].pids
    assert len(pids) == 2
    assert await wait_for(lambda: _none_alive(pids), 5), [p for p in pids if alive(p)]

    # -- segments and independent parts start at the same media times in every
    # rendition (tfdt, the 90 kHz media clock), with the same PROGRAM-DATE-TIME
    def starts(name: str) -> tuple[dict[int, int], set[int]]:
        """tfdt of each segment start -> its PDT; tfdts of the independent parts."""
        seg_starts, independent = {}, set()
        for msn, seg in segments[name].items():
            times = fragment_times(measured[name][msn])
            assert len(times) == len(seg.parts), (name, msn, len(times), len(seg.parts))
            assert seg.parts[0][1], f"{name} segment {msn} does not start with an independent part"
            seg_starts[times[0]] = seg.pdt_ms
            independent |= {t for t, (_uri, ind) in zip(times, seg.parts) if ind}
        return seg_starts, independent

    source_starts, source_independent = starts("source")
    skew = {}
    for name in TARGET_KBPS:
        seg_starts, independent = starts(name)
        lo, hi = min(seg_starts), max(seg_starts)
        assert len(seg_starts) >= 8, (name, seg_starts)
        assert set(seg_starts) == {t for t in source_starts if lo <= t <= hi}, (name, sorted(seg_starts))
        assert independent == {t for t in source_independent if lo <= t <= max(independent)}, name
        skew[name] = {seg_starts[t] - source_starts[t] for t in seg_starts}
    # bis 6.2.4: PDT mappings consistent across the variants (hls.js aligns
    # live levels by PDT when it switches).
    assert all(abs(d) <= 1 for s in skew.values() for d in s), f"PDT of renditions minus source, ms: {skew}"


async def _more_than(measure, value: float) -> bool:
    return await measure() > value


async def _masters_lists(http, base: str, names: set[str]) -> bool:
    status, body = await get(http, base + "master.m3u8")
    return status == 200 and set(parse_master(body.decode())) == names


async def _none_alive(pids: list[int]) -> bool:
    return not any(alive(p) for p in pids)


@pytest.mark.timeout(60)
async def test_480p_source_gets_only_lower_renditions_and_stop_leaves_no_worker(tmp_path):
    app = Livecast(server_config(tmp_path / "data", transcode=TRANSCODE))
    await app.start()
    publisher = None
    try:
        demo = await ensure_demo(app.db, app.data_dir)
        publisher = await start_ffmpeg(rtmp_url(app, demo.stream_key), seconds=40, size="854x480")
        base = f"{app.public_url}/live/{demo.room_id}/"
        async with aiohttp.ClientSession() as http:
            variants = await master_when(http, base, {"source", "360p"})
            assert variants["source"]["RESOLUTION"] == "854x480"
            assert variants["360p"]["RESOLUTION"] == "640x360"
            status = transcoder_status(app, demo.room_id)
            assert [r["name"] for r in status["renditions"]] == ["360p"]
            viewer = Viewer(http, f"{base}360p/")
            task = asyncio.create_task(viewer.run())
            try:
                assert await wait_for(lambda: _has_segments(viewer, 1), 10)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            msn = min(viewer.data)
            _, _, pictures = demux_video(viewer.inits[viewer.segments[msn].map_uri], [viewer.data[msn]])
            assert set(pictures) == {(640, 360)} and len(pictures) >= 15
            assert not (app.store.root / demo.room_id / "480p").exists()
            # The transcoder's state is in the Prometheus metrics too.
            async with http.get(f"{app.public_url}/metrics") as r:
                metrics = await r.text()
            assert 'livecast_transcoder_state{' in metrics and 'state="running"' in metrics
            assert 'livecast_rendition_active{' in metrics and 'rendition="360p"' in metrics
        pids = list(app._transcoders[demo.room_id].pids)
        assert pids and alive(pids[-1])
    finally:
        # Stopping the server mid-live kills and reaps the worker.
        await app.stop()
        if publisher is not None:
            await stop_process(publisher)
    assert not any(alive(p) for p in pids)


async def _has_segments(viewer: Viewer, n: int) -> bool:
    return len(viewer.data) >= n


@pytest.mark.timeout(60)
@pytest.mark.server_config(transcode=TRANSCODE)
async def test_passthrough_only_live_gets_the_source_rendition_only(server, live):
    live_id, room_id, key = live
    demo = await ensure_demo(server.db, server.data_dir)
    api = f"{server.public_url}/api/v1"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/auth/login", json={"email": demo.email, "password": demo.password}) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.put(f"{api}/lives/{live_id}/options", json={"passthrough_only": True}, headers=auth) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["passthrough_only"] is True
        publisher = await start_ffmpeg(rtmp_url(server, key), seconds=30, size="854x480")
        try:
            base = f"{server.public_url}/live/{room_id}/"
            variants = await master_when(http, base, {"source"})
            assert variants["source"]["RESOLUTION"] == "854x480"
            # Long enough for a transcoder to have produced its first part,
            # were there one: 3 s of media packaged after the master listed the source.
            async def packaged() -> float:
                status, body = await get(http, base + "source/index.m3u8")
                return sum(float(x) for x in re.findall(r"#EXTINF:([\d.]+),", body.decode())) if status == 200 else 0.0
            at_first = await packaged()
            assert await wait_for(lambda: _more_than(packaged, at_first + 3.0), 30)
            assert set(parse_master((await get(http, base + "master.m3u8"))[1].decode())) == {"source"}
            assert transcoder_status(server, room_id) is None
            assert set(server.packaging.outputs(room_id)) == {"source"}
        finally:
            await stop_process(publisher)


def fragment_first_cto(data: bytes, track_id: int = VIDEO_TRACK_ID) -> list[int]:
    """Composition offset (pts - dts) of the first sample of the track in each moof."""
    ctos = []
    for children in track_fragments(data, track_id):
        b3 = children["trun"]
        # full box, sample_count, data_offset, then (duration, size, flags, cto) per sample
        assert int.from_bytes(data[b3 + 1:b3 + 4], "big") & 0x800, "no composition offsets"
        ctos.append(int.from_bytes(data[b3 + 24:b3 + 28], "big", signed=True))
    return ctos


B_FRAME_TRANSCODE = {"enabled": True, "ladder": "360p:360:700,240p:240:300", "preset": "ultrafast",
                     "thumbnail_interval_s": 60.0}


@pytest.mark.timeout(60)
@pytest.mark.server_config(transcode=B_FRAME_TRANSCODE)
async def test_b_frame_source_segments_align_across_renditions(server, live):
    """OBS's x264 with bframes=2: the source's keyframes have dts < pts (a
    reorder delay) while the renditions are encoded without B-frames. The
    segments of every rendition must still start at the same decode time
    (tfdt), the same presentation time and the same PROGRAM-DATE-TIME."""
    live_id, room_id, key = live
    base = f"{server.public_url}/live/{room_id}/"
    names = ("source", "360p", "240p")
    publisher = await start_ffmpeg(rtmp_url(server, key), seconds=14, size="854x480",
                                   extra=("-bf", "2", "-x264-params", "b-pyramid=none"))
    tasks: list[asyncio.Task] = []
    try:
        async with aiohttp.ClientSession() as http:
            await master_when(http, base, set(names))
            viewers = {name: Viewer(http, f"{base}{name}/") for name in names}
            tasks = [asyncio.create_task(v.run()) for v in viewers.values()]
            assert await wait_for(lambda: _all_ended(viewers.values()), 40), "the lives did not end"
    finally:
        await stop_process(publisher)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def starts(name: str) -> dict[int, tuple[int, int, int | None]]:
        """segment tfdt -> (first sample pts, PDT)"""
        out = {}
        v = viewers[name]
        for msn, seg in v.segments.items():
            times, ctos = fragment_times(v.data[msn]), fragment_first_cto(v.data[msn])
            out[times[0]] = (times[0] + ctos[0], seg.pdt_ms)
        return out

    source = starts("source")
    source_ctos = {c for msn in viewers["source"].data for c in fragment_first_cto(viewers["source"].data[msn])}
    assert any(c > 0 for c in source_ctos), "the source has no B-frame reorder delay"
    for name in names[1:]:
        ours = starts(name)
        assert len(ours) >= 4, (name, ours)
        # The last segment of a rendition may end earlier (its final GOP) but starts aligned.
        assert set(ours) <= set(source), (name, sorted(ours), sorted(source))
        for tfdt, (pts, pdt) in ours.items():
            assert (pts, pdt) == source[tfdt], (name, tfdt, (pts, pdt), source[tfdt])


async def _all_ended(viewers) -> bool:
    return all(v.ended for v in viewers)
