"""The hub delivers exactly what the publisher sent.

Real publishes over a real socket (ffmpeg CLI, PyAV, GStreamer, and the test
client for timestamps encoders cannot produce) are compared packet for packet
with FFmpeg's demux of the source FLV: payload bytes, dts, pts (from the
composition time) and the keyframe flag, per track, in order.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from flv_media import demux, encode_flv, flv_tags
from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame
from support.publishers import stop_process
from support.rtmp_client import IngestHarness, RtmpTestClient, running_ingest

# PyAV (FFmpeg 8.1's rtmp:// client and FLV muxer) remuxing a file without
# re-encoding. It runs in a child process: PyAV holds the GIL while it opens
# an rtmp:// URL, which would freeze the server under test.
_PYAV_REMUX = r"""
import sys, av
src, url = sys.argv[1], sys.argv[2]
with av.open(src) as inp, av.open(url, "w", format="flv") as out:
    streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
    for p in inp.demux():
        if p.dts is None:
            continue  # the demuxer's flush packets
        p.stream = streams[p.stream.index]
        out.mux(p)
"""


@pytest.fixture
async def setup():
    async with running_ingest() as harness:
        yield harness


@pytest.fixture(scope="module")
def h264_aac(tmp_path_factory):
    """2 s of 320x240 H.264 (with B-frames) + AAC, muxed by FFmpeg into FLV."""
    path = tmp_path_factory.mktemp("src") / "h264_aac.flv"
    path.write_bytes(encode_flv("libx264", "aac", frames=60))
    return path


@pytest.fixture(scope="module")
def hevc_aac(tmp_path_factory):
    """1 s of HEVC + AAC; FFmpeg's FLV muxer writes Enhanced RTMP 'hvc1'."""
    path = tmp_path_factory.mktemp("src") / "hevc_aac.flv"
    path.write_bytes(encode_flv("libx265", "aac", frames=30, options={"x265-params": "log-level=none"}))
    return path


async def run(*args: str, timeout: float = 40) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
    finally:
        await stop_process(proc)


def assert_same_media(items: list, source: bytes, *, offset: int = 0) -> None:
    """The hub's frames equal the source's packets (timestamps + offset ms)."""
    packets = demux(source)
    for kind in (VIDEO, AUDIO):
        got = [(f.data, f.dts, f.pts, f.keyframe) for f in items if isinstance(f, Frame) and f.kind == kind]
        want = [(p.data, p.dts + offset, p.pts + offset, p.keyframe) for p in packets if p.kind == kind]
        assert len(want) > 20
        assert len(got) == len(want), kind
        for i, (g, w) in enumerate(zip(got, want)):
            assert g[1:] == w[1:], f"{kind} frame {i}: (dts, pts, key) {g[1:]} != {w[1:]}"
            assert g[0] == w[0], f"{kind} frame {i}: payload differs"
        dts = [g[1] for g in got]
        assert dts == sorted(dts)
        if kind == VIDEO:
            assert any(g[1] != g[2] for g in got), "the source has B-frames: pts must differ from dts"


def codecs(items: list) -> list[tuple[str, str]]:
    return [(c.kind, c.codec) for c in items if isinstance(c, CodecConfig)]


@pytest.mark.slow
async def test_ffmpeg_cli_stream_copy_is_exact(setup: IngestHarness, h264_aac):
    await run("ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(h264_aac),
              "-c", "copy", "-f", "flv", setup.url())
    items = await setup.items()
    assert codecs(items) == [(VIDEO, "h264"), (AUDIO, "aac")]
    assert_same_media(items, h264_aac.read_bytes())


@pytest.mark.slow
async def test_pyav_remux_to_rtmp_url_is_exact(setup: IngestHarness, h264_aac):
    await run(sys.executable, "-c", _PYAV_REMUX, str(h264_aac), setup.url())
    items = await setup.items()
    assert codecs(items) == [(VIDEO, "h264"), (AUDIO, "aac")]
    assert_same_media(items, h264_aac.read_bytes())


@pytest.mark.slow
async def test_gstreamer_rtmp2sink_equals_its_own_flvmux_output(setup: IngestHarness, tmp_path):
    # One flvmux output teed to rtmp2sink and to a file: the file is the
    # source the hub must match (B-frames on, so the CTS is exercised).
    copy = tmp_path / "gst.flv"
    await run(
        "gst-launch-1.0", "-q", "videotestsrc", "num-buffers=60", "!",
        "video/x-raw,width=320,height=240,framerate=30/1", "!",
        "x264enc", "speed-preset=ultrafast", "key-int-max=30", "bframes=2", "!",
        "h264parse", "!", "flvmux", "name=mux", "streamable=true", "!", "tee", "name=t",
        "t.", "!", "queue", "!", "rtmp2sink", f"location={setup.url()}",
        "t.", "!", "queue", "!", "filesink", f"location={copy}",
        "audiotestsrc", "num-buffers=90", "!", "audio/x-raw,rate=48000,channels=2", "!",
        "avenc_aac", "!", "aacparse", "!", "mux.",
    )
    items = await setup.items()
    assert codecs(items) == [(VIDEO, "h264"), (AUDIO, "aac")]
    assert_same_media(items, copy.read_bytes())


@pytest.mark.slow
async def test_enhanced_rtmp_hevc_from_ffmpeg_is_hevc_and_exact(setup: IngestHarness, hevc_aac):
    tags = flv_tags(hevc_aac.read_bytes())
    first_video = next(body for kind, _, body in tags if kind == 9)
    assert first_video[0] & 0x80 and first_video[1:5] == b"hvc1"  # E-RTMP, not codec id 7
    await run(sys.executable, "-c", _PYAV_REMUX, str(hevc_aac), setup.url())
    items = await setup.items()
    assert codecs(items) == [(VIDEO, "hevc"), (AUDIO, "aac")]
    assert {f.codec for f in items if isinstance(f, Frame) and f.kind == VIDEO} == {"hevc"}
    assert_same_media(items, hevc_aac.read_bytes())
    await setup.auth.wait_ended()
    assert setup.auth.updates[0][1].video_codec == "hevc"


@pytest.mark.slow
async def test_ffmpeg_cli_publish_across_the_24_bit_point(setup: IngestHarness, h264_aac):
    # The source starts 500 ms below 2**24 ms (4.66 h): the timestamps cross
    # from the 24-bit header field into the extended timestamp mid-stream.
    # -copyts: without it ffmpeg rebases the offset stream on its start time.
    start = 2**24 - 500
    await run("ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(h264_aac), "-c", "copy",
              "-copyts", "-output_ts_offset", f"{start}ms", "-f", "flv", setup.url())
    items = await setup.items()
    assert_same_media(items, h264_aac.read_bytes(), offset=start)
    assert min(f.dts for f in items if isinstance(f, Frame)) < 2**24 < max(f.dts for f in items if isinstance(f, Frame))


@pytest.mark.parametrize("compress", [True, False], ids=["delta-headers", "absolute-headers"])
@pytest.mark.parametrize("start", [2**24 - 500, 2**32 - 500], ids=["24-bit", "32-bit"])
async def test_publish_across_the_24_and_32_bit_points(setup: IngestHarness, h264_aac, start, compress):
    # FFmpeg's FLV muxer keeps only 31 bits of a timestamp, so no encoder
    # here can cross 2**32: the test client sends the source's FLV tags with
    # their timestamps moved to just below the wrap point, mod 2**32.
    source = h264_aac.read_bytes()
    client = RtmpTestClient("127.0.0.1", setup.srv.port, compress=compress)
    assert (await client.start_publish())["code"] == "NetStream.Publish.Start"
    tags = [(t, ts, body) for t, ts, body in flv_tags(source) if t in (8, 9)]
    # Keyframes span several chunks: the fmt-3 continuations carry the
    # extended timestamp too.
    assert max(len(body) for _, _, body in tags) > client.chunk_size
    for tag_type, ts, body in tags:
        await client.send_media("video" if tag_type == 9 else "audio", (ts + start) % 2**32, body)
    await client.close()
    items = await setup.items()
    assert_same_media(items, source, offset=start)
    dts = [f.dts for f in items if isinstance(f, Frame)]
    assert min(dts) < (start + 500) < max(dts)  # crossed 2**24 / 2**32, unwrapped to 64 bits
