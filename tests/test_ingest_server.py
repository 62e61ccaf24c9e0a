"""End to end: real encoders (ffmpeg CLI, PyAV, GStreamer) and the test RTMP
client publish to a real RtmpServer on a real socket, with the real
StreamRegistry/StreamHub and a dict-based PublishAuthority."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from support.publishers import ffmpeg_publish, start_gstreamer, start_pyav, stop_process
from support.rtmp_client import AAC_SEQUENCE_HEADER, DictAuthority, IngestHarness, RtmpTestClient, running_ingest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
async def setup():
    async with running_ingest() as harness:
        yield harness


async def run_to_end(proc: asyncio.subprocess.Process, timeout: float = 40) -> None:
    """Wait for an encoder to exit by itself and check it succeeded."""
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
    finally:
        await stop_process(proc)


def check_stream(items: list, *, min_video: int, min_audio: int) -> None:
    assert isinstance(items[0], StreamStart) and items[0].live_id == 1
    assert isinstance(items[-1], StreamEnd)
    seen_config: set[str] = set()
    video = audio = 0
    for item in items[1:-1]:
        if isinstance(item, CodecConfig):
            seen_config.add(item.kind)
        elif isinstance(item, Frame):
            assert item.kind in seen_config, "a frame arrived before its codec config"
            if item.kind == VIDEO:
                if video == 0:
                    assert item.keyframe
                video += 1
            else:
                audio += 1
    assert video >= min_video and audio >= min_audio
    configs = {i.kind: i for i in items if isinstance(i, CodecConfig)}
    assert configs[VIDEO].codec == "h264" and configs[AUDIO].codec == "aac"


@pytest.mark.slow
async def test_ffmpeg_cli_publish(setup):
    task = asyncio.create_task(ffmpeg_publish(setup.url(), seconds=3))
    # stats() while on air, through the registry.
    stats = None
    async with asyncio.timeout(20):
        while not task.done():
            await asyncio.sleep(0.3)
            streams = setup.registry.streams()
            if streams and streams[0]["uptime_s"] >= 1.5:
                stats = streams[0]
                break
    rc, err = await task
    assert rc == 0, err
    items = await setup.items()
    check_stream(items, min_video=80, min_audio=100)
    assert stats is not None
    assert stats["video_codec"] == "h264" and stats["audio_codec"] == "aac"
    assert stats["encoder"].startswith("Lavf")
    assert 20 <= stats["fps"] <= 40 and stats["bitrate_kbps"] > 0 and stats["bytes_received"] > 0
    await setup.auth.wait_ended()
    [(live_id, nbytes, reason)] = setup.auth.ended_calls
    assert live_id == 1 and nbytes > 10_000 and reason.startswith("unpublished")
    [(_, info)] = setup.auth.updates
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.metadata["width"] == 320.0


@pytest.mark.slow
async def test_pyav_publish_in_child_process(setup):
    await run_to_end(await start_pyav(setup.url(), seconds=2))
    items = await setup.items()
    check_stream(items, min_video=50, min_audio=50)
    await setup.auth.wait_ended()


@pytest.mark.slow
async def test_gstreamer_publish(setup):
    await run_to_end(await start_gstreamer(setup.url(), buffers=90))
    items = await setup.items()
    check_stream(items, min_video=80, min_audio=80)
    frames = [i for i in items if isinstance(i, Frame) and i.kind == VIDEO]
    # Timestamps advance at the frame rate (the fmt-3 reading of the spec
    # must not double them).
    assert 2500 <= frames[-1].dts - frames[0].dts <= 3500
    await setup.auth.wait_ended()


@pytest.mark.slow
async def test_librtmp_publish_via_gstreamer_rtmpsink(setup):
    # librtmp is what OBS's RTMP output is forked from.
    args = [
        "gst-launch-1.0", "-q", "videotestsrc", "num-buffers=60", "!",
        "video/x-raw,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=30", "!",
        "h264parse", "!", "flvmux", "name=mux", "streamable=true", "!",
        "rtmpsink", f"location={setup.url()} live=1",
        "audiotestsrc", "num-buffers=90", "!", "avenc_aac", "!", "aacparse", "!", "mux.",
    ]
    await run_to_end(await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    items = await setup.items()
    check_stream(items, min_video=55, min_audio=50)
    await setup.auth.wait_ended()
    assert setup.auth.updates[0][1].encoder.startswith("GStreamer")


@pytest.mark.slow
async def test_ffmpeg_with_wrong_key_fails_cleanly(setup):
    rc, err = await ffmpeg_publish(setup.url("nope"), seconds=1, timeout=30)
    assert rc != 0
    assert "Server error: Unknown stream key." in err
    assert setup.auth.ended_calls == []


async def test_wrong_key_refused_with_badname(setup):
    c = RtmpTestClient("127.0.0.1", setup.srv.port)
    await c.open()
    assert (await c.connect()).args[0]["code"] == "NetConnection.Connect.Success"
    sid = await c.create_stream()
    status = await c.publish("nope", sid)
    assert status == {"level": "error", "code": "NetStream.Publish.BadName",
                      "description": "Unknown stream key."}
    assert await c.wait_closed(3)
    await c.close()
    assert setup.auth.ended_calls == []


async def test_wrong_app_refused(setup):
    c = RtmpTestClient("127.0.0.1", setup.srv.port)
    await c.open()
    res = await c.connect("vod")
    assert res.name == "_error"
    assert res.args[0]["code"] == "NetConnection.Connect.Rejected"
    assert await c.wait_closed(3)
    await c.close()
    assert setup.auth.authorized == []


async def test_play_refused(setup):
    c = RtmpTestClient("127.0.0.1", setup.srv.port)
    await c.open()
    await c.connect()
    sid = await c.create_stream()
    status = await c.play("good", sid)
    assert status["level"] == "error" and status["code"] == "NetStream.Play.Failed"
    assert "publish" in status["description"]
    assert await c.wait_closed(3)
    await c.close()


@pytest.mark.parametrize("scheme", [None, 0, 1])
async def test_handshake_variants_against_the_server(setup, scheme):
    c = RtmpTestClient("127.0.0.1", setup.srv.port, digest_scheme=scheme)
    await c.open()
    assert c.handshake.server_validated == (scheme is not None)
    assert (await c.connect()).name == "_result"
    await c.close()


async def start_publisher(setup: IngestHarness, key: str = "good") -> RtmpTestClient:
    c = RtmpTestClient("127.0.0.1", setup.srv.port)
    status = await c.start_publish(key)
    assert status["code"] == "NetStream.Publish.Start"
    await c.send_media("audio", 0, AAC_SEQUENCE_HEADER)
    return c


async def test_takeover(setup):
    a = await start_publisher(setup)
    b = await start_publisher(setup)
    assert await a.wait_closed(2)
    await setup.auth.wait_ended()
    assert setup.auth.ended_calls[0][2] == "takeover"
    assert setup.registry.publisher(1) is not None
    await b.send_media("audio", 20, AAC_SEQUENCE_HEADER)
    await b.close()
    await setup.auth.wait_ended(2)
    consumer = setup.consumers[0]
    kinds = []
    while (item := consumer.get_nowait()) is not None:
        kinds.append((type(item).__name__, getattr(item, "session_id", None)))
    assert kinds[0] == ("StreamStart", 1)
    assert ("StreamEnd", 1) in kinds and ("StreamStart", 2) in kinds
    assert kinds.index(("StreamEnd", 1)) < kinds.index(("StreamStart", 2))
    await a.close()


class InjectingAuthority(DictAuthority):
    """Before granting a publish, runs `before_grant` (no await in between,
    so nothing else on the loop runs before the takeover)."""

    before_grant = None

    async def authorize(self, app: str, stream_key: str, remote: str):
        grant = await super().authorize(app, stream_key, remote)
        if self.before_grant is not None:
            self.before_grant()
        return grant


async def test_stale_publisher_frames_never_reach_the_hub_after_takeover():
    # The race: media of the old publisher is already in its connection's
    # read buffer when the new publisher takes over. The old connection
    # still parses those bytes after drop(); none may reach the hub after
    # the new session's StreamStart. Delivering the old client's next
    # chunks into its server-side reader just before the grant makes that
    # timing certain.
    auth = InjectingAuthority({"good": 1})
    async with running_ingest(authority=auth) as setup:
        a = await start_publisher(setup)
        await a.send_media("audio", 20, b"\xaf\x01" + b"fresh" * 10)
        consumer = setup.consumers[0]
        async with asyncio.timeout(5):
            while not any(isinstance(i, Frame) for i in consumer._queue):
                await asyncio.sleep(0.01)
        old_conn = setup.registry.publisher(1)
        read_before = old_conn.session.bytes_received
        stale = b"".join(a.media_bytes("audio", 40 + 20 * i, b"\xaf\x01" + b"stale" * 10) for i in range(5))
        auth.before_grant = lambda: old_conn._reader.feed_data(stale)
        b = await start_publisher(setup)
        await b.send_media("audio", 0, b"\xaf\x01" + b"new" * 10)
        await b.close()
        await auth.wait_ended(2)
        items = []
        while (item := consumer.get_nowait()) is not None:
            items.append(item)
        await a.close()
    # The old connection did read the stale bytes (its session counted them).
    assert old_conn.session.bytes_received == read_before + len(stale)
    sessions = [i.session_id for i in items if isinstance(i, StreamStart)]
    assert sessions == [1, 2]
    second = items.index(StreamStart(1, 2, {}))
    payloads = [i.data for i in items[second:] if isinstance(i, Frame)]
    assert payloads == [b"new" * 10]
    assert [i.data for i in items[:second] if isinstance(i, Frame)] == [b"fresh" * 10]


async def test_registry_drop_closes_within_a_second(setup):
    c = await start_publisher(setup)
    start = time.monotonic()
    assert setup.registry.drop(1, "blocked")
    assert await c.wait_closed(5)
    # Closed by the drop itself (the reason below), not by a timeout: the
    # issue's 1 s, plus slack for a loaded machine; the idle timeout is far longer.
    assert time.monotonic() - start < 1.0 + 1.5
    assert setup.srv.limits.idle_timeout > 1.0 + 1.5
    await setup.auth.wait_ended()
    assert setup.auth.ended_calls == [(1, setup.auth.ended_calls[0][1], "blocked")]
    await c.close()


async def test_stop_ends_every_publisher(setup):
    a = await start_publisher(setup, "good")
    b = await start_publisher(setup, "other")
    assert setup.srv.connection_count == 2
    await setup.srv.stop()
    assert setup.srv.connection_count == 0
    assert sorted(x[0] for x in setup.auth.ended_calls) == [1, 2]
    assert {x[2] for x in setup.auth.ended_calls} == {"server stopping"}
    await a.close()
    await b.close()


async def test_client_that_vanishes_mid_publish_ends_once(setup):
    c = await start_publisher(setup)
    c.writer.transport.abort()
    await setup.auth.wait_ended()
    await asyncio.sleep(0.1)
    assert len(setup.auth.ended_calls) == 1
    assert setup.auth.ended_calls[0][2] == "disconnected"


_IDLE_SERVER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    from ingest.limits import IngestLimits
    from ingest.registry import StreamRegistry
    from ingest.server import RtmpServer

    class NoAuth:
        async def authorize(self, app, key, remote): raise RuntimeError
        async def update(self, grant, info): pass
        async def ended(self, grant, **kw): pass

    async def main():
        srv = RtmpServer(NoAuth(), StreamRegistry(), limits=IngestLimits(
            handshake_timeout=60, max_connections_per_address=5000, max_connections=5000))
        await srv.start()
        print(srv.port, flush=True)
        while True:
            await asyncio.sleep(0.2)
            print(srv.connection_count, flush=True)

    asyncio.run(main())
""")


@pytest.mark.slow
async def test_1000_idle_connections_are_held_and_released():
    """1000 connections that never finish the handshake are all accepted and
    counted (the limits allow them), and every one is released when its
    client leaves. What they cost in memory is measured in bench/, not here."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IDLE_SERVER, ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    conns = []
    try:
        async with asyncio.timeout(60):
            port = int(await proc.stdout.readline())

            async def count() -> int:
                return int(await proc.stdout.readline())

            for _ in range(1000):
                conns.append(await asyncio.open_connection("127.0.0.1", port))
            while await count() != 1000:
                pass
            # Held, not refused or closed: each socket is still open and silent.
            for r, _ in conns[::100]:
                assert not r.at_eof()
            for _, w in conns:
                w.close()
            while await count() != 0:
                pass
    finally:
        for _, w in conns:
            w.close()
        await stop_process(proc)


async def test_unsupported_codec_ends_the_publish_with_a_clear_reason(setup, caplog):
    c = await start_publisher(setup)
    await c.send_media("video", 0, bytes((0x12, 0, 0, 0)))  # FLV codec id 2: Sorenson H.263
    assert await c.wait_closed(3)
    await setup.auth.wait_ended()
    reason = setup.auth.ended_calls[0][2]
    assert reason.startswith("unsupported codec:") and "codec id 2" in reason
    assert "unsupported codec" in caplog.text
    await c.close()
