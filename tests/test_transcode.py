"""The ABR transcoder: pipe protocol, PyAV worker, and the supervisor with a
real StreamHub, real worker processes and real libx264."""
from __future__ import annotations

import asyncio
import os
import random

import av
import pytest
from hypothesis import given, settings, strategies as st

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from ingest.hub import StreamHub
from transcode_media import opus, source
from transcoder.ladder import parse_ladder
from livecast.metrics import render
from transcoder.transcode import RenditionQueue, TranscodeSettings, Transcoder, metric_families
from transcoder.workerproto import (
    NEED_DATA, T_FRAME, T_OUT_CONFIG, Message, MessageReader, ProtocolError, encode, json_message,
)

LADDER = parse_ladder("720p:720:2800,480p:480:1200,360p:360:700,240p:240:300")

# -- protocol --------------------------------------------------------------------------------
MESSAGES = [
    Message(T_FRAME, 0, 1, 1000, 1066, 7, b"\x00\x00\x00\x02\x65\x88"),
    json_message(T_OUT_CONFIG, {"codec": "h264", "record": "01", "width": 640, "height": 360}, track=2),
    Message(T_FRAME, 255, 1, -5, 2**40, 2**63, b""),
]


def _parse(chunks) -> list[Message]:
    r, out = MessageReader(), []
    for c in chunks:
        r.receive_data(c)
        out += list(r.messages())
    assert r.next_message() is NEED_DATA and r.buffered == 0
    return out


def test_protocol_whole_bytewise_and_random_splits():
    data = b"".join(encode(m) for m in MESSAGES)
    assert _parse([data]) == MESSAGES
    assert _parse([data[i:i + 1] for i in range(len(data))]) == MESSAGES
    rng = random.Random(5)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), 4))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        assert _parse(chunks) == MESSAGES


def test_protocol_refuses_oversized_and_short_lengths():
    r = MessageReader(max_message_bytes=1024)
    r.receive_data((2000).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        r.next_message()
    r = MessageReader()
    r.receive_data((3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ProtocolError):
        r.next_message()
    with pytest.raises(ProtocolError):
        Message(1, payload=b"[1]").json()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_protocol_any_bytes_end_in_messages_or_protocol_error(data):
    r = MessageReader(max_message_bytes=4096)
    r.receive_data(data)
    try:
        for m in r.messages():
            assert isinstance(m, Message)
    except ProtocolError:
        pass


def test_rendition_queue_skips_to_keyframe_when_full():
    async def main():
        q = RenditionQueue("x", max_items=3)
        cfg = CodecConfig(VIDEO, "h264", b"\x01")
        q.put(cfg)
        for i in range(5):
            q.put(Frame(VIDEO, "h264", i, i, i == 0, b"a"))
        q.put(Frame(VIDEO, "h264", 9, 9, True, b"k"))
        q.end()
        got = []
        while (item := await q.get()) is not None:
            got.append(item)
        assert got[0] == cfg and got[-1].dts == 9 and got[-1].keyframe
        assert q.dropped > 0 and len(got) <= 4
    asyncio.run(main())


# -- supervisor ------------------------------------------------------------------------------
class Collector:
    """A stand-in consumer for a rendition's packager: keeps every item."""

    def __init__(self):
        self.items: dict[str, list] = {}
        self.tasks: list[asyncio.Task] = []

    def __call__(self, name: str, queue) -> None:
        items = self.items.setdefault(name, [])

        async def run():
            while (item := await queue.get()) is not None:
                items.append(item)
        self.tasks.append(asyncio.create_task(run()))

    async def done(self):
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)

    def frames(self, name: str, kind=VIDEO) -> list[Frame]:
        return [i for i in self.items[name] if isinstance(i, Frame) and i.kind == kind]


def publish_all(hub: StreamHub, video, audio=None, session: int = 1) -> None:
    hub.publish(StreamStart(1, session))
    items = list(video[1])
    if audio is not None:
        hub.publish(audio[0])
        items = sorted(items + list(audio[1]), key=lambda f: f.dts)
    hub.publish(video[0])
    for f in items:
        hub.publish(f)


def decode_rendition(items: list) -> list[av.VideoFrame]:
    cfg = [i for i in items if isinstance(i, CodecConfig) and i.kind == VIDEO][-1]
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = cfg.record
    out = []
    for f in items:
        if isinstance(f, Frame) and f.kind == VIDEO:
            out += dec.decode(av.Packet(f.data))
    return out + dec.decode(None)


async def until(pred, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_ladder_below_source_resolution_and_keyframes_aligned():
    video = source(854, 480, seconds=3.0, gop=30, bframes=2)
    hub, sink = StreamHub(1), Collector()
    tc = Transcoder("room1", hub, LADDER, TranscodeSettings(), sink)
    tc.start()
    publish_all(hub, video)
    hub.publish(StreamEnd(1, 1, "unpublish"))
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await sink.done()
    # A 480p source gets only the renditions below 480p.
    assert sorted(sink.items) == ["240p", "360p"]
    src_keys = [f.pts for f in video[1] if f.keyframe]
    # The source has B-frames: its keyframes decode a reorder delay before they show.
    src_key_times = [(f.dts, f.pts) for f in video[1] if f.keyframe]
    assert all(dts < pts for dts, pts in src_key_times)
    for name, (w, h) in {"360p": (640, 360), "240p": (428, 240)}.items():
        frames = sink.frames(name)
        assert len(frames) == len(video[1])
        assert [f.pts for f in frames if f.keyframe] == src_keys
        # Keyframes carry the source's decode times too (the packager cuts on
        # dts), so segment tfdt and PDT match the source's; dts increases.
        assert [(f.dts, f.pts) for f in frames if f.keyframe] == src_key_times
        assert all(a.dts < b.dts for a, b in zip(frames, frames[1:]))
        assert all(f.dts <= f.pts for f in frames)
        assert isinstance(sink.items[name][0], StreamStart) and isinstance(sink.items[name][-1], StreamEnd)
        pictures = decode_rendition(sink.items[name])
        assert len(pictures) == len(frames)
        assert {(p.width, p.height) for p in pictures} == {(w, h)}
    st_ = tc.status()
    assert st_["state"] == "ended" and st_["restarts"] == 0
    assert [r["name"] for r in st_["renditions"]] == ["360p", "240p"]
    assert not alive(tc.pids[0])


@pytest.mark.slow
async def test_aac_passes_through_interleaved_and_opus_becomes_aac():
    from hls_media import aac
    video = source(640, 360, seconds=2.0)
    for audio, codec in ((aac(2.0), "aac"), (opus(2.0), "opus")):
        hub, sink = StreamHub(1), Collector()
        tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(), sink)
        tc.start()
        publish_all(hub, video, audio)
        hub.close()
        await asyncio.wait_for(tc.wait(), 60)
        await sink.done()
        items = sink.items["240p"]
        cfgs = [i for i in items if isinstance(i, CodecConfig) and i.kind == AUDIO]
        frames = sink.frames("240p", AUDIO)
        assert cfgs and cfgs[-1].codec == "aac"
        if codec == "aac":
            # Untouched: the very same frames, in order.
            assert cfgs[-1] == audio[0]
            assert [f.data for f in frames] == [f.data for f in audio[1]]
            assert frames == list(audio[1])  # timestamps too
            # Interleaved: no audio frame is delivered far ahead of the video.
            last_video = -1
            for i in items:
                if isinstance(i, Frame) and i.kind == VIDEO:
                    last_video = i.dts
                elif isinstance(i, Frame) and last_video >= 0:
                    assert i.dts <= last_video + 200
        else:
            dec = av.CodecContext.create("aac", "r")
            dec.extradata = cfgs[-1].record
            samples = sum(fr.samples for f in frames for fr in dec.decode(av.Packet(f.data)))
            assert samples >= 48000 * 1.8  # ~2 s of audio came back as AAC
            assert [f.dts for f in frames] == sorted(f.dts for f in frames)


@pytest.mark.slow
async def test_killed_worker_is_restarted_and_output_resumes():
    video = source(640, 360, seconds=4.0, gop=15)
    hub, sink = StreamHub(1), Collector()
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(), sink)
    tc.start()
    frames = list(video[1])
    hub.publish(StreamStart(1, 1))
    hub.publish(video[0])
    for f in frames[:45]:
        hub.publish(f)
    await until(lambda: len(sink.items.get("240p", [])) > 30, 30)  # the worker is producing
    first_pid = tc.pid
    assert first_pid is not None
    os.kill(first_pid, 9)
    # The crash is noticed before the rest of the source comes.
    await until(lambda: tc._reader_task is not None and tc._reader_task.done(), 10)
    for f in frames[45:]:
        hub.publish(f)
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await sink.done()
    st_ = tc.status()
    assert st_["restarts"] == 1 and len(tc.pids) == 2 and tc.pids[1] != first_pid
    out = sink.frames("240p")
    late = [f for f in out if f.pts >= frames[45].pts]
    # Output resumes at the first source keyframe after the crash, and continues to the end.
    first_key_after = min(f.pts for f in frames[45:] if f.keyframe)
    assert late and late[0].pts == first_key_after and late[0].keyframe
    assert out[-1].pts == max(f.pts for f in frames)
    assert not any(alive(p) for p in tc.pids)


@pytest.mark.slow
async def test_stop_leaves_no_worker_process():
    video = source(640, 360, seconds=2.0)
    hub, sink = StreamHub(1), Collector()
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(), sink)
    tc.start()
    publish_all(hub, video)
    await until(lambda: tc.pid is not None, 30)
    pid = tc.pid
    assert pid is not None and alive(pid)
    await tc.stop()
    assert not alive(pid)  # killed and reaped, not a zombie
    assert tc.status()["state"] == "stopped" and tc.status()["pid"] is None
    await sink.done()  # every rendition queue ended


@pytest.mark.slow
async def test_falling_behind_drops_the_lowest_rendition_first():
    video = source(640, 360, seconds=2.0)
    hub, sink = StreamHub(1), Collector()
    # Any lag counts as "behind"; one drop per (long) cooldown.
    cfg = TranscodeSettings(degrade_lag_ms=0, degrade_cooldown_s=600)
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300,180p:180:200"), cfg, sink)
    source_side = hub.subscribe("source")
    tc.start()
    publish_all(hub, video)
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await sink.done()
    states = {r["name"]: r["state"] for r in tc.status()["renditions"]}
    assert states == {"240p": "active", "180p": "dropped"}
    # ... and visible in /metrics.
    text = render(metric_families([{"room_id": "room1", "live_id": 1, "transcoder": tc.status()}]))
    assert 'livecast_rendition_active{live="1",rendition="180p",room="room1"} 0' in text
    assert 'livecast_rendition_active{live="1",rendition="240p",room="room1"} 1' in text
    assert 'livecast_transcoder_degradations_total{live="1",room="room1"} 1' in text
    assert 'livecast_transcoder_state{live="1",room="room1",state="ended"} 1' in text
    assert len(sink.frames("240p")) == len(video[1])
    assert len(sink.frames("180p")) < len(video[1])
    # The source rendition's consumer lost nothing.
    got = 0
    while (item := await source_side.get()) is not None:
        got += isinstance(item, Frame)
    assert got == len(video[1])


@pytest.mark.slow
async def test_bitrate_within_20_percent_of_target():
    seconds = 10.0
    video = source(854, 480, seconds=seconds, gop=60, kbps=2500)
    hub, sink = StreamHub(1), Collector()
    ladder = parse_ladder("360p:360:700,240p:240:300")
    tc = Transcoder("room1", hub, ladder, TranscodeSettings(consumer_max_items=2000), sink)
    tc.start()
    publish_all(hub, video)
    hub.close()
    await asyncio.wait_for(tc.wait(), 80)
    await sink.done()
    for r in ladder:
        frames = sink.frames(r.name)
        kbps = sum(len(f.data) for f in frames) * 8 / seconds / 1000
        print(f"{r.name}: target {r.video_kbps} kbit/s, measured {kbps:.0f} kbit/s over {seconds:.0f} s")
        assert abs(kbps - r.video_kbps) <= 0.2 * r.video_kbps


@pytest.mark.slow
async def test_renditions_are_packaged_as_ll_hls(tmp_path):
    from storage.segments import SegmentStore
    from transcoder.hls_settings import HlsSettings
    from transcoder.packaging import PackagingService
    store = SegmentStore(tmp_path)
    service = PackagingService(store, HlsSettings(target_duration_ms=1000, part_target_ms=250,
                                                  max_segment_ms=2000))
    video = source(640, 360, seconds=4.0, gop=30)
    hub = StreamHub(1)
    service.start("room1", hub)
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(),
                    lambda name, q: service.start_rendition("room1", name, q))
    tc.start()
    publish_all(hub, video)
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await service.stop()
    playlist = store.read("room1", "240p", "index.m3u8").decode()
    assert "#EXT-X-ENDLIST" in playlist and "#EXT-X-PART:" in playlist
    init = [n for n in store.list("room1", "240p") if n.startswith("init")]
    segs = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert init and segs
    data = store.read("room1", "240p", init[0]) + store.read("room1", "240p", segs[0])
    path = tmp_path / "check.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        pic = next(c.decode(video=0))
        assert (pic.width, pic.height) == (428, 240)


@pytest.mark.slow
async def test_a_worker_that_floods_stderr_is_drained_and_rate_limited(tmp_path, caplog):
    """2 MB on stderr before the worker even starts: with the pipe undrained
    the worker would block on its first write and the live would stall."""
    import sys
    wrapper = tmp_path / "chatty-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"'{sys.executable}' -c 'import sys; sys.stderr.write((\"decoder noise \" * 20 + \"\\n\") * 8000)'\n"
        f"exec '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    video = source(640, 360, seconds=2.0)
    hub, sink = StreamHub(1), Collector()
    caplog.set_level("WARNING", logger="transcoder.transcode")
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(stderr_line_bytes=50),
                    sink, python=str(wrapper))
    tc.start()
    publish_all(hub, video)
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await sink.done()
    assert len(sink.frames("240p")) == len(video[1]) and tc.restarts == 0
    lines = [r.getMessage() for r in caplog.records if "decoder noise" in r.getMessage()]
    assert lines and len(lines) <= 20 * 10  # stderr_lines_per_s over the test's few seconds
    assert all(len(line.split(": ", 2)[2]) <= 50 for line in lines)
    assert any("stderr lines not logged" in r.getMessage() for r in caplog.records)


def test_rendition_queue_stays_bounded_when_configs_repeat():
    """A publisher repeating its sequence header with every frame, while the
    packager is stuck: the queue keeps the session items and the newest config."""
    async def main():
        q = RenditionQueue("x", max_items=10)
        q.put(StreamStart(1, 1))
        for i in range(1000):
            q.put(CodecConfig(VIDEO, "h264", bytes([i % 256])))
            q.put(Frame(VIDEO, "h264", i, i, i % 30 == 0, b"f"))
        assert len(q._items) <= 2 * q.max_items
        q.put(CodecConfig(AUDIO, "aac", b"\x12\x10"))
        q.end()
        got = []
        while (item := await q.get()) is not None:
            got.append(item)
        assert isinstance(got[0], StreamStart)
        configs = [i for i in got if isinstance(i, CodecConfig) and i.kind == VIDEO]
        assert configs and configs[-1].record == bytes([999 % 256])
        frames = [i for i in got if isinstance(i, Frame)]
        assert not frames or frames[0].keyframe  # video restarts on a keyframe
    asyncio.run(main())


def test_decode_time_aligner_gives_keyframes_the_source_dts():
    from transcoder.alignment import DecodeTimeAligner
    a = DecodeTimeAligner(2)
    # Source: B-frames, keyframes decode 67 ms before they show.
    a.source_keyframe(dts=933, pts=1000)
    a.source_keyframe(dts=1933, pts=2000)
    # Rendition 0 without B-frames (dts = pts): shifted by 67 ms per GOP.
    assert [a.output(0, t, t, t in (1000, 2000)) for t in (1000, 1033, 1967, 2000)] == [933, 966, 1900, 1933]
    # Rendition 1 with its own reorder delay (dts = pts - 33): shifted by 34 ms.
    assert a.output(1, 967, 1000, True) == 933 and a.output(1, 1000, 1067, False) == 966
    # The source's delay grows by two frames at the next GOP: dts stays increasing.
    a.source_keyframe(dts=2867, pts=3000)
    assert a.output(0, 2967, 2967, False) == 2900
    assert a.output(0, 3000, 3000, True) == 2901
    # A new publish session restarts the clock: a big step back passes through.
    a.source_keyframe(dts=0, pts=0)
    assert a.output(0, 0, 0, True) == 0
    # Bounded memory of source keyframes.
    for n in range(1000):
        a.source_keyframe(n, n)
    assert len(a._source) == a.max_keyframes
