"""An Opus source gets AAC in every rendition, `source` included (a
non-AAC source is transcoded to AAC once): the source rendition's input
(transcoder/source_audio.py SourceInput) swaps the hub's Opus for the
transcoder's AAC, keeping the source's video untouched; a live without a
ladder rendition gets an audio-only worker for it; an AAC live never starts
a worker for that.

The fast tests drive SourceInput with a real StreamHub and hand-fed AAC; the
slow ones publish H.264 + Opus over Enhanced RTMP from PyAV's bundled FFmpeg
(in a child process: PyAV holds the GIL while it opens rtmp://) to the real
server and decode what it serves with PyAV.
"""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import aiohttp
import av
import pytest

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from ingest.hub import StreamHub
from storage.models import LiveOption
from support.publishers import start_ffmpeg, stop_process
from transcoder.source_audio import SourceInput

from conftest import rtmp_url

AAC_FRAME_S = 1024 / 48000

# -- SourceInput with a real hub ------------------------------------------------------------
VCFG = CodecConfig(VIDEO, "h264", b"\x01avc", width=640, height=360)
OPUS = CodecConfig(AUDIO, "opus", b"OpusHead", sample_rate=48000, channels=2)
AAC = CodecConfig(AUDIO, "aac", b"\x11\x90", sample_rate=48000, channels=2)


def video(ms: int, key: bool = False) -> Frame:
    return Frame(VIDEO, "h264", ms, ms, key, b"v%d" % ms)


def audio(codec: str, ms: int) -> Frame:
    return Frame(AUDIO, codec, ms, ms, True, b"a%d" % ms)


async def drain(src: SourceInput, n: int, timeout: float = 5) -> list:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(src.get(), timeout))
    return out


async def test_aac_source_passes_through_unchanged():
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=100, max_bytes=1 << 20))
    items = [StreamStart(1, 1), VCFG, AAC, video(0, True), audio("aac", 0), video(33), audio("aac", 21),
             StreamEnd(1, 1, "unpublish")]
    for i in items:
        hub.publish(i)
    hub.close()
    assert await drain(src, len(items)) == items
    assert await src.get() is None


async def test_opus_is_replaced_and_video_waits_for_the_aac_config():
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=100, max_bytes=1 << 20))
    fired = []
    src.on_foreign_audio(lambda: fired.append(True))
    for i in (StreamStart(1, 1), VCFG, OPUS, video(0, True), audio("opus", 0), video(33), audio("opus", 20)):
        hub.publish(i)
    first = await drain(src, 2)
    assert first == [StreamStart(1, 1), VCFG]
    # The video is held: the transcoder's AAC config has not come yet.
    pending = asyncio.ensure_future(src.get())
    await asyncio.sleep(0.1)
    assert not pending.done() and fired == [True]
    # The transcoder's feed: its own session marker, the AAC config and frames.
    src.audio.put(StreamStart(1, 1))
    src.audio.put(AAC)
    src.audio.put(audio("aac", 0))
    rest = [await asyncio.wait_for(pending, 2)] + await drain(src, 3)
    assert rest[0] == AAC
    assert sorted(rest[1:], key=repr) == sorted([audio("aac", 0), video(0, True), video(33)], key=repr)
    # The end waits for the transcoder's end of the session (its last AAC first).
    hub.publish(StreamEnd(1, 1, "unpublish"))
    hub.close()
    pending = asyncio.ensure_future(src.get())
    await asyncio.sleep(0.1)
    assert not pending.done()
    src.audio.put(audio("aac", 21))
    src.audio.put(StreamEnd(1, 1, "unpublish"))
    assert await asyncio.wait_for(pending, 2) == audio("aac", 21)
    assert await drain(src, 2) == [StreamEnd(1, 1, "unpublish"), None]
    assert not any(isinstance(i, Frame) and i.codec == "opus" for i in first + rest)


async def test_without_a_transcoder_the_video_goes_on_after_the_bounded_wait():
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=100, max_bytes=1 << 20), audio_wait_s=0.2, end_wait_s=0.2)
    for i in (StreamStart(1, 1), VCFG, OPUS, video(0, True), audio("opus", 0), video(33), StreamEnd(1, 1, "x")):
        hub.publish(i)
    hub.close()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await drain(src, 5)
    assert got == [StreamStart(1, 1), VCFG, video(0, True), video(33), StreamEnd(1, 1, "x")]
    assert 0.15 < loop.time() - t0 < 2
    assert await src.get() is None


async def test_a_full_hold_releases_at_once_and_an_ended_feed_is_not_waited_for():
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=100, max_bytes=1 << 20), audio_wait_s=60, max_held_items=3)
    for i in (StreamStart(1, 1), VCFG, OPUS, *(video(t, t == 0) for t in range(0, 200, 33))):
        hub.publish(i)
    got = await drain(src, 2 + 7, timeout=2)
    assert [f.dts for f in got[2:]] == list(range(0, 200, 33))
    # A new session whose transcoder is gone: nothing waits.
    src.audio.end()
    for i in (StreamEnd(1, 1, "x"), StreamStart(1, 2), VCFG, OPUS, video(300, True)):
        hub.publish(i)
    assert await drain(src, 4, timeout=2) == [StreamEnd(1, 1, "x"), StreamStart(1, 2), VCFG, video(300, True)]
    src.close()
    assert await src.get() is None


async def test_stale_feed_audio_is_dropped_and_a_new_session_waits_for_its_own():
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=100, max_bytes=1 << 20), end_wait_s=0.1)
    for i in (StreamStart(1, 1), VCFG, OPUS, video(0, True)):
        hub.publish(i)
    src.audio.put(StreamStart(1, 1))
    src.audio.put(AAC)
    got = await drain(src, 4)
    # The transcoder's audio is handed out as soon as it is there: configs in either order.
    assert got[0] == StreamStart(1, 1) and set(got[1:3]) == {VCFG, AAC} and got[3] == video(0, True)
    # The feed is already in session 2 while the hub still sends session 1.
    src.audio.put(StreamEnd(1, 1, "x"))
    src.audio.put(StreamStart(1, 2))
    src.audio.put(AAC)
    src.audio.put(audio("aac", 5000))
    for i in (video(33), StreamEnd(1, 1, "x"), StreamStart(1, 2), VCFG, OPUS, video(5000, True)):
        hub.publish(i)
    got = await drain(src, 7)
    # Session 2's AAC waits for the hub's session 2, and its frames for the video's first frame.
    assert got[:3] == [video(33), StreamEnd(1, 1, "x"), StreamStart(1, 2)]
    assert got[3:] == [AAC, VCFG, video(5000, True), audio("aac", 5000)]
    src.close()


# -- the audio-only transcoder feeding a SourceInput --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
async def test_audio_only_worker_gives_the_source_aac_on_its_timeline(backend):
    from test_transcode import Collector, alive, publish_all
    from transcode_media import opus, source
    from transcoder.transcode import TranscodeSettings, Transcoder

    vid, opu = source(320, 180, seconds=2.0), opus(2.0)
    hub = StreamHub(1)
    src = SourceInput(hub.subscribe("source", max_items=1000, max_bytes=1 << 24))
    sink = Collector()
    # No ladder (transcoding disabled, or the passthrough switch): the worker runs for the audio alone.
    tc = Transcoder("room1", hub, [], TranscodeSettings(backend=backend), sink, audio_out=src.audio)
    tc.start()
    publish_all(hub, vid, opu)
    hub.publish(StreamEnd(1, 1, "unpublish"))
    hub.close()
    got = []
    while (item := await asyncio.wait_for(src.get(), 30)) is not None:
        got.append(item)
    await asyncio.wait_for(tc.wait(), 30)
    st = tc.status()
    assert st["audio_only"] and st["renditions"] == [] and not sink.items and len(tc.pids) == 1
    assert not alive(tc.pids[0])
    # The source's video untouched, the Opus gone, AAC in its place.
    assert [i for i in got if isinstance(i, Frame) and i.kind == VIDEO] == list(vid[1])
    assert not any(getattr(i, "codec", "") == "opus" for i in got)
    cfgs = [i for i in got if isinstance(i, CodecConfig) and i.kind == AUDIO]
    aac = [i for i in got if isinstance(i, Frame) and i.kind == AUDIO]
    assert [c.codec for c in cfgs] == ["aac"] and got.index(cfgs[0]) < got.index(vid[1][0])
    assert isinstance(got[-1], StreamEnd) and got.index(aac[-1]) < len(got) - 1
    # On the source's timeline: the priming frame one AAC frame before the
    # first Opus packet, then 1024 samples (21.33 ms) a frame to the end.
    first, last = opu[1][0], opu[1][-1]
    assert aac[0].dts == first.dts - 22 and aac[1].dts == first.dts
    assert all(0 <= b.dts - a.dts <= 22 for a, b in zip(aac, aac[1:]))
    assert abs(aac[-1].dts - last.dts) <= 1024 * 1000 // 48000
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = cfgs[0].record
    samples = sum(f.samples for p in aac for f in dec.decode(av.Packet(p.data)))
    assert samples >= len(opu[1]) * 960 - 1024


# -- end to end --------------------------------------------------------------------------------
_PUBLISHER = r"""
import array, fractions, math, sys, time
import av
url, seconds, acodec, width, height = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
FPS = 30
out = av.open(url, "w", format="flv")  # Opus in FLV: Enhanced RTMP 'Opus' FourCC
v = out.add_stream("libx264", rate=FPS)
v.width, v.height, v.pix_fmt = width, height, "yuv420p"
v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "30", "keyint_min": "30", "sc_threshold": "0"}
a = out.add_stream(acodec, rate=48000)
a.layout = "stereo"
a.format = "s16" if acodec == "libopus" else "fltp"
size = 960 if acodec == "libopus" else 1024
start, samples = time.monotonic(), 0
for i in range(int(seconds * FPS)):
    frame = av.VideoFrame(width, height, "yuv420p")
    for n, plane in enumerate(frame.planes):
        plane.update(bytes([(i * 8 + n * 60) % 256]) * plane.buffer_size)
    frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
    for p in v.encode(frame):
        out.mux(p)
    while samples < (i + 1) * 48000 // FPS:
        tone = array.array("h", [int(8000 * math.sin(2 * math.pi * 440 * (samples + k) / 48000))
                                 for k in range(size) for _c in range(2)])
        af = av.AudioFrame(format="s16", layout="stereo", samples=size)
        af.planes[0].update(tone.tobytes())
        af.sample_rate, af.pts, af.time_base = 48000, samples, fractions.Fraction(1, 48000)
        samples += size
        for p in a.encode(af):
            out.mux(p)
    delay = start + (i + 1) / FPS - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for s in (v, a):
    for p in s.encode(None):
        out.mux(p)
out.close()
"""


async def publish_opus(url: str, seconds: float = 3.0, width: int = 640, height: int = 360) -> None:
    """H.264 + Opus from PyAV in a child process, paced in real time; waits for it to finish."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PUBLISHER, url, str(seconds), "libopus", str(width), str(height),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        await stop_process(proc)
    assert proc.returncode == 0, err.decode(errors="replace")


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


async def master_variants(http, base: str) -> dict[str, dict[str, str]]:
    status, body = await fetch(http, base + "master.m3u8")
    if status != 200:
        return {}
    lines, out = body.decode().splitlines(), {}
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            codecs = line.split('CODECS="', 1)[1].split('"', 1)[0] if 'CODECS="' in line else ""
            out[lines[i + 1].split("/")[0]] = {"codecs": codecs}
    return out


async def wait_master(http, base: str, names: set[str], timeout: float = 20) -> dict:
    variants: dict = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        variants = await master_variants(http, base)
        if set(variants) == names:
            return variants
        await asyncio.sleep(0.2)
    raise AssertionError(f"master.m3u8 never listed {sorted(names)}: {variants}")


async def packaged_seconds(http, base: str) -> float:
    """Seconds of complete segments the source playlist lists."""
    status, body = await fetch(http, f"{base}source/index.m3u8")
    if status != 200:
        return 0.0
    return sum(float(line[8:].split(",", 1)[0]) for line in body.decode().splitlines() if line.startswith("#EXTINF:"))


async def ended_media(http, base: str, rendition: str, timeout: float = 30) -> bytes:
    """The rendition's init segment and every segment, once its playlist has ENDLIST."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await fetch(http, f"{base}{rendition}/index.m3u8")
        if status == 200 and b"#EXT-X-ENDLIST" in body:
            break
        assert asyncio.get_running_loop().time() < deadline, f"{rendition} never ended"
        await asyncio.sleep(0.3)
    text = body.decode()
    maps = [line.split('URI="', 1)[1].split('"', 1)[0] for line in text.splitlines() if line.startswith("#EXT-X-MAP:")]
    # One init segment, no DISCONTINUITY: the AAC joined the first track set.
    assert len(maps) == 1 and "#EXT-X-DISCONTINUITY\n" not in text, text
    data = [(await fetch(http, f"{base}{rendition}/{maps[0]}"))[1]]
    for line in text.splitlines():
        if line and not line.startswith("#"):
            status, seg = await fetch(http, f"{base}{rendition}/{line}")
            assert status == 200, line
            data.append(seg)
    return b"".join(data)


def decode_av(media: bytes) -> dict:
    """Durations (s) of the video and audio tracks from their samples, the
    audio codec, and the decoded audio sample count and video picture size."""
    with av.open(io.BytesIO(media), format="mp4") as c:
        vs, as_ = c.streams.video[0], c.streams.audio[0]
        codec = as_.codec_context.name
        dur = {VIDEO: 0, AUDIO: 0}
        start: dict[str, float] = {}
        samples, pictures = 0, set()
        for p in c.demux():
            if p.size == 0:
                continue
            kind = VIDEO if p.stream is vs else AUDIO
            start.setdefault(kind, float(p.dts * p.time_base))
            dur[kind] += p.duration * p.time_base
            for f in p.decode():
                if kind == AUDIO:
                    samples += f.samples
                else:
                    pictures.add((f.width, f.height))
        return {"codec": codec, "video_s": float(dur[VIDEO]), "audio_s": float(dur[AUDIO]),
                "video_start": start[VIDEO], "audio_start": start[AUDIO],
                "audio_rate": as_.rate, "samples": samples, "pictures": pictures}


def transcoder_status(server, room_id: str) -> dict | None:
    return next((s["transcoder"] for s in server.streams() if s["room_id"] == room_id), None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][:1] != "Z"


def check_aac_track(info: dict, size: tuple[int, int]) -> None:
    assert info["codec"] == "aac" and info["audio_rate"] == 48000
    assert info["pictures"] == {size}
    assert info["video_s"] > 2.5
    # A/V: the AAC covers the video's time within one AAC frame, from the same start.
    assert abs(info["audio_s"] - info["video_s"]) <= AAC_FRAME_S + 1e-6, info
    assert abs(info["audio_start"] - info["video_start"]) <= AAC_FRAME_S + 1e-6, info
    assert info["samples"] >= (info["video_s"] - 2 * AAC_FRAME_S) * 48000


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.server_config(transcode={"enabled": True, "ladder": "240p:240:300", "preset": "ultrafast"},
                           hls={"end_grace_s": 1.0})
async def test_opus_source_gets_aac_in_source_and_rendition(server, live):
    _live_id, room_id, key = live
    base = f"{server.public_url}/live/{room_id}/"
    async with aiohttp.ClientSession() as http:
        publisher = asyncio.create_task(publish_opus(rtmp_url(server, key), seconds=3.0))
        try:
            variants = await wait_master(http, base, {"source", "240p"})
            status = transcoder_status(server, room_id)
            assert status["state"] == "running" and not status["audio_only"] and status["pid"]
        finally:
            await publisher
        for name in ("source", "240p"):
            assert "mp4a.40.2" in variants[name]["codecs"] and "avc1." in variants[name]["codecs"], variants
        source = decode_av(await ended_media(http, base, "source"))
        rendition = decode_av(await ended_media(http, base, "240p"))
    check_aac_track(source, (640, 360))
    check_aac_track(rendition, (428, 240))
    # One transcode for both: the same audio length in each.
    assert abs(source["audio_s"] - rendition["audio_s"]) <= AAC_FRAME_S + 1e-6


async def _set_passthrough(server, live_id: int) -> None:
    async with server.db.session() as session, session.begin():
        session.add(LiveOption(live_id=live_id, passthrough_only=True))


NO_LADDER = {
    "transcode disabled": {"transcode": {"enabled": False}},
    "passthrough only": {"transcode": {"enabled": True, "ladder": "240p:240:300"}},
    "source below the ladder": {"transcode": {"enabled": True, "ladder": "360p:360:700"}},
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", NO_LADDER)
async def test_opus_source_without_a_ladder_rendition_gets_an_audio_only_worker(tmp_path, case):
    from conftest import server_config
    from livecast.app import Livecast
    from storage.demo import ensure_demo

    app = Livecast(server_config(tmp_path / "data", hls={"end_grace_s": 1.0}, **NO_LADDER[case]))
    await app.start()
    try:
        demo = await ensure_demo(app.db, app.data_dir)
        if case == "passthrough only":
            await _set_passthrough(app, demo.live_id)
        base = f"{app.public_url}/live/{demo.room_id}/"
        async with aiohttp.ClientSession() as http:
            publisher = asyncio.create_task(publish_opus(rtmp_url(app, demo.stream_key), seconds=3.0))
            try:
                variants = await wait_master(http, base, {"source"})
                status = transcoder_status(app, demo.room_id)
                assert status["audio_only"] and status["state"] == "running" and status["renditions"] == []
                pid = status["pid"]
                assert pid and alive(pid)
            finally:
                await publisher
            assert "mp4a.40.2" in variants["source"]["codecs"], variants
            check_aac_track(decode_av(await ended_media(http, base, "source")), (640, 360))
            assert set(app.packaging.outputs(demo.room_id)) == {"source"}
    finally:
        await app.stop()
    assert not alive(pid)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("transcode", [{"enabled": False}, {"enabled": True, "ladder": "360p:360:700"}])
async def test_aac_source_without_a_ladder_rendition_starts_no_worker(tmp_path, transcode):
    from conftest import server_config
    from livecast.app import Livecast
    from storage.demo import ensure_demo

    app = Livecast(server_config(tmp_path / "data", transcode=transcode))
    await app.start()
    publisher = None
    try:
        demo = await ensure_demo(app.db, app.data_dir)
        publisher = await start_ffmpeg(rtmp_url(app, demo.stream_key), seconds=20, size="320x240")
        base = f"{app.public_url}/live/{demo.room_id}/"
        async with aiohttp.ClientSession() as http:
            variants = await wait_master(http, base, {"source"})
            assert "mp4a.40.2" in variants["source"]["codecs"]
            # Well past the first frames, where a worker would start: a
            # further second of media packaged after the master listed the source.
            first = await packaged_seconds(http, base)
            deadline = asyncio.get_running_loop().time() + 30
            while await packaged_seconds(http, base) < first + 1.0:
                assert asyncio.get_running_loop().time() < deadline, "the source stopped being packaged"
                await asyncio.sleep(0.1)
            status = transcoder_status(app, demo.room_id)
            if transcode["enabled"]:
                assert status["state"] == "not_needed" and status["pid"] is None
                assert not app._transcoders[demo.room_id].pids
            else:
                assert status is None  # no transcoder at all
    finally:
        if publisher is not None:
            await stop_process(publisher)
        await app.stop()
