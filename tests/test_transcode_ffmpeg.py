"""The ffmpeg CLI backend (transcode.backend = "ffmpeg") gives the same
renditions as the PyAV worker: sizes, frame counts, aligned keyframes, Opus
turned into AAC, and a dropped rendition that stops being encoded."""
from __future__ import annotations

import asyncio
import threading

import av
import pytest

from ingest.frames import AUDIO, CodecConfig
from ingest.hub import StreamHub
from test_transcode import Collector, alive, decode_rendition, publish_all
from transcode_media import opus, source
from transcoder.ffmpeg_worker import FfmpegWorker
from transcoder.ladder import parse_ladder
from transcoder.transcode import TranscodeSettings, Transcoder
from transcoder.workerloop import WorkerSetup
from transcoder.workerproto import (
    F_KEYFRAME, T_CONFIG, T_DISABLE, T_FLUSH, T_FRAME, T_OUT_FRAME, Message, config_payload, json_message,
)


@pytest.mark.slow
async def test_ffmpeg_backend_produces_the_same_renditions():
    video = source(854, 480, seconds=3.0, gop=30, bframes=2)
    ladder = parse_ladder("720p:720:2800,360p:360:700,240p:240:300")
    results = {}
    for backend in ("pyav", "ffmpeg"):
        hub, sink = StreamHub(1), Collector()
        tc = Transcoder("room1", hub, ladder, TranscodeSettings(backend=backend), sink)
        tc.start()
        publish_all(hub, video)
        hub.close()
        await asyncio.wait_for(tc.wait(), 60)
        await sink.done()
        assert not any(alive(p) for p in tc.pids)
        results[backend] = {
            name: ([f.pts for f in sink.frames(name)], [(f.dts, f.pts) for f in sink.frames(name) if f.keyframe],
                   {(p.width, p.height) for p in decode_rendition(items)})
            for name, items in sink.items.items()}
    assert sorted(results["ffmpeg"]) == ["240p", "360p"]
    assert results["ffmpeg"] == results["pyav"]
    src_keys = [(f.dts, f.pts) for f in video[1] if f.keyframe]
    assert results["ffmpeg"]["360p"][1] == src_keys


@pytest.mark.slow
async def test_ffmpeg_backend_transcodes_opus_to_aac():
    video, audio = source(640, 360, seconds=2.0), opus(2.0)
    hub, sink = StreamHub(1), Collector()
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(backend="ffmpeg"), sink)
    tc.start()
    publish_all(hub, video, audio)
    hub.close()
    await asyncio.wait_for(tc.wait(), 60)
    await sink.done()
    cfgs = [i for i in sink.items["240p"] if isinstance(i, CodecConfig) and i.kind == AUDIO]
    assert cfgs and cfgs[-1].codec == "aac"
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = cfgs[-1].record
    frames = sink.frames("240p", AUDIO)
    samples = sum(fr.samples for f in frames for fr in dec.decode(av.Packet(f.data)))
    assert samples >= 48000 * 1.8
    assert len(sink.frames("240p")) == len(video[1])


@pytest.mark.slow
def test_ffmpeg_backend_stops_encoding_a_dropped_rendition():
    """T_DISABLE: at the next source keyframe ffmpeg is drained and restarted
    without the dropped rendition (a running filter graph cannot lose an
    output); the other rendition goes on without a gap."""
    cfg, frames = source(640, 360, seconds=3.0, gop=30)
    out, lock = [], threading.Lock()

    def emit(msg):
        with lock:
            out.append(msg)
    worker = FfmpegWorker(WorkerSetup(parse_ladder("240p:240:300,180p:180:200"), preset="ultrafast"), emit)
    try:
        worker.handle(json_message(T_CONFIG, config_payload("h264", cfg.record, 640, 360), track=0))
        cmdlines = []
        for n, f in enumerate(frames):
            if n == 40:
                worker.handle(Message(T_DISABLE, track=1))
            worker.handle(Message(T_FRAME, 0, F_KEYFRAME if f.keyframe else 0, f.dts, f.pts, 0, f.data))
            if f.keyframe:
                with open(f"/proc/{worker.proc.pid}/cmdline", "rb") as c:
                    cmdlines.append(c.read().split(b"\0").count(b"libx264"))
        worker.handle(Message(T_FLUSH))
    finally:
        worker.close()
    assert cmdlines == [2, 2, 1]  # keyframes at 0, 30, 60: the restart happens at frame 60
    assert worker.encoding == [0]
    video_out = {track: [m.pts for m in out if m.type == T_OUT_FRAME and m.track == track] for track in (0, 1)}
    assert video_out[0] == [f.pts for f in frames]  # every frame, across the restart
    assert video_out[1] and max(video_out[1]) < frames[60].pts
