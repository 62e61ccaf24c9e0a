"""The ffmpeg CLI backend (transcode.backend = "ffmpeg") gives the same
renditions as the PyAV worker: sizes, frame counts, aligned keyframes."""
from __future__ import annotations

import asyncio

import pytest

from ingest.hub import StreamHub
from test_transcode import Collector, alive, decode_rendition, publish_all
from transcode_media import source
from transcoder.ladder import parse_ladder
from transcoder.transcode import TranscodeSettings, Transcoder


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
            name: ([f.pts for f in sink.frames(name)], [f.pts for f in sink.frames(name) if f.keyframe],
                   {(p.width, p.height) for p in decode_rendition(items)})
            for name, items in sink.items.items()}
    assert sorted(results["ffmpeg"]) == ["240p", "360p"]
    assert results["ffmpeg"] == results["pyav"]
    src_keys = [f.pts for f in video[1] if f.keyframe]
    assert results["ffmpeg"]["360p"][1] == src_keys
