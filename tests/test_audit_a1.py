"""Audit A1 fixes: bounded time and memory, no lost background failures.

Each test fails without its fix: a stalled hub consumer kept every control
item of a flapping publisher; an SMTP server trickling an endless reply held
a thread forever; an HTTP client that never finished its request held the
connection for an hour; a crashed transcoder task was silent until shutdown;
a worker that stopped reading its pipe hung the transcoder in drain().
"""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from types import SimpleNamespace

import pytest

from control_api.mail import MailError, Mailer
from ingest.frames import VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from ingest.hub import StreamHub
from transcoder.ladder import parse_ladder
from transcoder.transcode import TranscodeSettings, Transcoder

from tests.conftest import server_config


# -- ingest/hub.py: a stalled consumer and a publisher that keeps reconnecting

def test_stalled_consumer_does_not_keep_empty_sessions():
    hub = StreamHub(1)
    consumer = hub.subscribe("stalled", max_items=8, max_bytes=1 << 20)
    for session in range(1, 501):
        hub.publish(StreamStart(1, session, {}))
        hub.publish(CodecConfig(VIDEO, "h264", b"cfg%d" % session, 320, 240))
        for i in range(12):
            hub.publish(Frame(VIDEO, "h264", i * 33, i * 33, i % 6 == 0, b"x" * 100))
        hub.publish(StreamEnd(1, session, "reconnect"))
        # Bounded whatever the number of sessions (was ~2 items per session).
        assert consumer.queued_items <= 8 + 3
    items = []
    while True:
        try:
            item = consumer.get_nowait()
        except asyncio.QueueEmpty:
            break
        items.append(item)
    # What is left is coherent: the newest session, started, configured, ended.
    starts = [i for i in items if isinstance(i, StreamStart)]
    ends = [i for i in items if isinstance(i, StreamEnd)]
    assert starts and starts[-1].session_id == 500
    assert ends and ends[-1].session_id == 500
    assert items.index(starts[-1]) < items.index(ends[-1])
    assert any(isinstance(i, CodecConfig) and i.record == b"cfg500" for i in items)


def test_overflow_keeps_the_end_of_a_session_the_consumer_already_started():
    hub = StreamHub(1)
    consumer = hub.subscribe("slow", max_items=4, max_bytes=1 << 20)
    hub.publish(StreamStart(1, 1, {}))
    assert isinstance(consumer.get_nowait(), StreamStart)  # the reader is inside session 1
    hub.publish(CodecConfig(VIDEO, "h264", b"c", 320, 240))
    hub.publish(StreamEnd(1, 1, "gone"))
    hub.publish(StreamStart(1, 2, {}))
    for i in range(10):
        hub.publish(Frame(VIDEO, "h264", i * 33, i * 33, i == 0, b"y"))
    kinds = []
    while True:
        try:
            kinds.append(consumer.get_nowait())
        except asyncio.QueueEmpty:
            break
    # Its StreamEnd is not in a span starting in the queue: it must stay.
    assert any(isinstance(i, StreamEnd) and i.session_id == 1 for i in kinds)
    assert any(isinstance(i, StreamStart) and i.session_id == 2 for i in kinds)


# -- control_api/mail.py: the SMTP session is bounded in total time

async def test_smtp_session_is_cut_off_at_its_deadline(tmp_path):
    closed = asyncio.get_running_loop().create_future()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # An endless multi-line greeting, each line well within the socket timeout.
        try:
            while not reader.at_eof():
                writer.write(b"220-still greeting\r\n")
                await writer.drain()
                try:
                    async with asyncio.timeout(0.05):
                        await reader.read(1024)
                except TimeoutError:
                    pass
        except (ConnectionError, OSError):
            pass
        finally:
            if not closed.done():
                closed.set_result(time.monotonic())
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        mailer = Mailer(SimpleNamespace(smtp_host="127.0.0.1", smtp_port=port, sender="noreply@livecast.test",
                                        timeout_s=0.2), tmp_path)
        started = time.monotonic()
        with pytest.raises(MailError):
            await mailer.send("someone@livecast.test", "hello", "body")
        failed_at = time.monotonic()
        assert failed_at - started < 3.0  # 3 x timeout + 1 s
        # The thread's socket was shut down: the server sees the client go.
        ended = await asyncio.wait_for(closed, 3.0)
        assert ended - failed_at < 2.0
    finally:
        server.close()
        await server.wait_closed()


# -- livecast/app.py: HTTP keep-alive / request-header deadline

async def test_http_connection_without_a_complete_request_is_closed(tmp_path, monkeypatch):
    import livecast.app
    from livecast.app import Livecast

    monkeypatch.setattr(livecast.app, "HTTP_KEEPALIVE_TIMEOUT_S", 0.5)
    app = Livecast(server_config(tmp_path / "data"))
    await app.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
        assert data == b""  # closed by the server, nothing answered
        writer.close()
        # A complete request is still served.
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5.0)
        assert data.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await app.stop()


# -- livecast/app.py: thumbnails are linked without a stat per request

async def test_thumbnail_url_from_startup_scan_and_background_failure_logged(tmp_path, caplog):
    from livecast.app import Livecast

    data = tmp_path / "data"
    (data / "hls" / "roomwiththumb").mkdir(parents=True)
    (data / "hls" / "roomwiththumb" / "thumbnail.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    app = Livecast(server_config(data))
    await app.start()
    try:
        assert app.thumbnail_url("roomwiththumb") == f"{app.public_url}/live/roomwiththumb/thumbnail.jpg"
        assert app.thumbnail_url("roomwithout") is None

        async def broken() -> None:
            raise RuntimeError("boom in the background")

        with caplog.at_level(logging.ERROR, logger="livecast.app"):
            app._spawn(broken())
            for _ in range(50):
                await asyncio.sleep(0.01)
                if "boom in the background" in caplog.text:
                    break
        assert "background task" in caplog.text and "boom in the background" in caplog.text
    finally:
        await app.stop()


# -- transcoder/transcode.py: failures are logged, a stuck pipe is bounded

class _Sink:
    def __init__(self) -> None:
        self.queues = {}

    def __call__(self, name, queue) -> None:
        self.queues[name] = queue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_transcoder_crash_is_logged_when_it_happens(caplog):
    hub = StreamHub(1)
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), TranscodeSettings(), _Sink(),
                    python="/nonexistent/python-for-audit")
    tc.start()
    with caplog.at_level(logging.ERROR, logger="transcoder.transcode"):
        hub.publish(StreamStart(1, 1, {}))
        hub.publish(CodecConfig(VIDEO, "h264", b"\x01avcC", 1280, 720))  # starts the worker: fails
        for _ in range(100):
            await asyncio.sleep(0.01)
            if tc.state == "failed":
                break
    assert tc.state == "failed"
    assert "room1: transcoder failed" in caplog.text and "python-for-audit" in caplog.text
    hub.close()
    await tc.stop()  # stop() never looks at a finished task: the log is the only trace
    assert tc.status()["state"] == "failed"


async def test_worker_that_stops_reading_is_restarted(tmp_path):
    # A "worker" that never reads its stdin: the pipe fills on a big frame.
    script = tmp_path / "deaf-worker"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    hub = StreamHub(1)
    settings = TranscodeSettings(stall_timeout_s=0.5, exit_timeout_s=0.5, max_restarts_per_minute=1)
    tc = Transcoder("room1", hub, parse_ladder("240p:240:300"), settings, _Sink(), python=str(script))
    tc.start()
    try:
        hub.publish(StreamStart(1, 1, {}))
        hub.publish(CodecConfig(VIDEO, "h264", b"\x01avcC", 1280, 720))
        hub.publish(Frame(VIDEO, "h264", 0, 0, True, b"\0" * (2 << 20)))
        deadline = time.monotonic() + 15
        while tc.state != "failed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Restarted once after the stuck drain, stuck again, then gave up.
        assert tc.restarts == 1 and tc.state == "failed"
        assert len(tc.pids) == 2
    finally:
        hub.close()
        await tc.stop()
    assert not any(_alive(pid) for pid in tc.pids)
