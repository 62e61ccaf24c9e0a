"""IngestLimits: the docs match the dataclass, and every deadline and limit
is enforced by a real RtmpServer on a real socket (short values here)."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib
import socket
import time

import pytest

from ingest import messages as m
from ingest.limits import IngestLimits, limits_table
from ingest.registry import StreamRegistry
from ingest.server import RtmpServer
from ingest.session import state_diagram
from support.rtmp_client import AAC_SEQUENCE_HEADER, DictAuthority, RtmpTestClient

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def generated_block(text: str, marker: str) -> str:
    start = text.index(f"<!-- BEGIN GENERATED: {marker} -->")
    end = text.index("<!-- END GENERATED -->", start)
    return text[text.index("\n", start) + 1 : end].strip()


def test_limits_doc_matches_the_dataclass():
    text = (DOCS / "limits.md").read_text()
    assert generated_block(text, "ingest.limits.limits_table()") == limits_table()


def test_state_diagram_doc_matches_the_table():
    text = (DOCS / "ingest.md").read_text()
    block = generated_block(text, "ingest.session.state_diagram()")
    assert block == f"```mermaid\n{state_diagram()}\n```"


def test_every_limit_has_a_reason_and_a_sane_default():
    for f in dataclasses.fields(IngestLimits):
        assert len(f.metadata["why"]) > 20
        assert getattr(IngestLimits(), f.name) > 0


@pytest.fixture
async def make_server():
    servers = []

    async def make(**limits) -> tuple[RtmpServer, DictAuthority, StreamRegistry]:
        auth = DictAuthority({"good": 1, "other": 2})
        registry = StreamRegistry(end_grace_s=0)
        srv = RtmpServer(auth, registry, limits=IngestLimits(**limits))
        await srv.start()
        servers.append(srv)
        return srv, auth, registry

    yield make
    for srv in servers:
        await srv.stop()


async def wait_until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def publisher(srv: RtmpServer, key: str = "good") -> tuple[RtmpTestClient, dict]:
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    await c.connect()
    sid = await c.create_stream()
    status = await c.publish(key, sid)
    return c, status


async def test_handshake_deadline_cuts_a_slowloris(make_server, caplog):
    caplog.set_level(logging.DEBUG, "ingest.server")
    srv, _, _ = await make_server(handshake_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    start = time.monotonic()
    closed_at = None
    for i in range(40):  # one byte every 0.25 s: would take 13 min to finish C0+C1
        try:
            writer.write(b"\x03" if i == 0 else b"\x00")
            await writer.drain()
            async with asyncio.timeout(0.25):
                if await reader.read(100) == b"":
                    closed_at = time.monotonic()
                    break
        except TimeoutError:
            continue
        except ConnectionError:
            closed_at = time.monotonic()
            break
    writer.close()
    assert closed_at is not None
    # Cut by the handshake deadline (the reason says so), not before it and
    # not by anything later: the trickle itself never stalls for 1 s. The
    # upper bound is the deadline plus slack for a loaded machine.
    assert closed_at - start >= 0.9
    assert closed_at - start <= 1.0 + 2.0
    await wait_until(lambda: srv.connection_count == 0)
    assert "closing: handshake timeout" in caplog.text


async def test_connect_and_never_publish_is_cut(make_server, caplog):
    caplog.set_level(logging.DEBUG, "ingest.server")
    srv, auth, _ = await make_server(publish_timeout=0.5)
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    res = await c.connect()
    assert res.args[0]["code"] == "NetConnection.Connect.Success"
    start = time.monotonic()
    assert await c.wait_closed(5)
    assert time.monotonic() - start >= 0.4  # not before the deadline
    assert "closing: no publish before the deadline" in caplog.text  # and by it
    assert auth.ended_calls == []
    await c.close()


async def test_first_media_deadline(make_server):
    srv, auth, registry = await make_server(first_media_timeout=0.5)
    c, status = await publisher(srv)
    assert status["code"] == "NetStream.Publish.Start"
    assert await c.wait_closed(3)
    await auth.wait_ended()
    assert auth.ended_calls[0][0] == 1 and auth.ended_calls[0][2] == "no media after publish"
    assert registry.publisher(1) is None
    await c.close()


async def test_idle_read_timeout_ends_the_publish(make_server):
    srv, auth, _ = await make_server(idle_timeout=1.0)
    c, status = await publisher(srv)
    assert status["code"] == "NetStream.Publish.Start"
    start = time.monotonic()
    for ts in range(0, 800, 100):  # traffic every 0.15 s keeps it alive past the timeout
        await c.send_media("audio", ts, AAC_SEQUENCE_HEADER)
        await asyncio.sleep(0.15)
    assert time.monotonic() - start > 1.0  # the traffic did outlast one idle timeout
    assert not auth.ended_calls, auth.ended_calls
    assert await c.wait_closed(5)
    await auth.wait_ended()
    assert auth.ended_calls[0][2] == "idle timeout"
    await c.close()


async def test_per_address_connection_limit(make_server):
    srv, _, _ = await make_server(max_connections_per_address=3)
    socks = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
    await wait_until(lambda: srv.connection_count == 3)
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        async with asyncio.timeout(2):
            assert await r.read(10) == b""  # closed before any handshake
    except ConnectionError:
        pass
    w.close()
    assert srv.connection_count == 3
    for _, w in socks:
        w.close()
    await wait_until(lambda: srv.connection_count == 0)
    c = RtmpTestClient("127.0.0.1", srv.port)  # slots are free again
    await c.open()
    await c.close()


async def test_total_connection_limit(make_server):
    srv, _, _ = await make_server(max_connections=2)
    socks = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
    await wait_until(lambda: srv.connection_count == 2)
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        async with asyncio.timeout(2):
            assert await r.read(10) == b""
    except ConnectionError:
        pass
    for _, wr in [*socks, (r, w)]:
        wr.close()


async def test_failed_publishes_are_limited_even_when_clients_leave_fast(make_server):
    srv, auth, _ = await make_server(failed_publishes_per_minute=3)
    for i in range(3):
        c = RtmpTestClient("127.0.0.1", srv.port)
        await c.open()
        await c.connect()
        await c.create_stream()
        # Send publish with a wrong key and disconnect without reading the reply.
        await c.send(m.Command("publish", 0.0, None, [f"guess{i}"], 1, 4))
        await c.close()
    async with asyncio.timeout(5):
        while len(auth.authorized) < 3:
            await asyncio.sleep(0.02)
    await wait_until(lambda: srv.failures.blocked("127.0.0.1"))  # the third refusal is recorded
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    res = await c.connect()
    assert res.name == "_error"
    assert res.args[0]["code"] == "NetConnection.Connect.Rejected"
    assert "failed publish" in res.args[0]["description"]
    assert await c.wait_closed(3)
    await c.close()
    assert len(auth.authorized) == 3  # the good key was never even asked


async def test_wrong_app_counts_as_a_failed_attempt(make_server):
    srv, _, _ = await make_server(failed_publishes_per_minute=1)
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    assert (await c.connect("nope")).name == "_error"
    await c.close()
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    res = await c.connect("live")
    assert res.name == "_error" and "failed publish" in res.args[0]["description"]
    await c.close()


async def test_max_message_size_enforced(make_server):
    srv, auth, _ = await make_server(max_message_size=100_000)
    c, status = await publisher(srv)
    await c.send_raw(bytes.fromhex("06 000000 0186a1 09 01000000"))  # 100001 bytes declared
    assert await c.wait_closed(3)
    await auth.wait_ended()
    assert "exceeds" in auth.ended_calls[0][2]
    await c.close()


async def test_max_chunk_streams_enforced(make_server):
    srv, _, _ = await make_server(max_chunk_streams=4)
    c = RtmpTestClient("127.0.0.1", srv.port)
    await c.open()
    await c.connect()  # uses csid 2 and 3
    for csid in (10, 11, 12):
        await c.send_raw(bytes((csid,)) + bytes.fromhex("000000 000001 08 01000000 00"))
    assert await c.wait_closed(3)
    await c.close()


async def test_write_timeout_cuts_a_peer_that_does_not_read(make_server, caplog):
    caplog.set_level(logging.DEBUG, "ingest.server")
    srv, _, _ = await make_server(write_timeout=0.5, idle_timeout=10)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    c = RtmpTestClient("127.0.0.1", srv.port)
    c.reader, c.writer = reader, writer
    await c.do_handshake()
    await c.connect()
    ping = c.writer_state.write(m.UserControl(m.UC_PING_REQUEST, bytes(4)).to_raw())
    ping += c.writer_state.write(m.UserControl(m.UC_PING_REQUEST, bytes(4)).to_raw()) * 2000
    start = time.monotonic()
    closed = False
    while time.monotonic() - start < 20:
        try:
            writer.write(ping)
            async with asyncio.timeout(0.2):
                await writer.drain()
        except TimeoutError:
            pass
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0)
        if srv.connection_count == 0:
            closed = True
            break
    writer.transport.abort()
    assert closed
    assert "closing: write timeout" in caplog.text


async def test_authorize_timeout_refuses_instead_of_hanging(make_server):
    srv, auth, _ = await make_server(authorize_timeout=0.3)
    release = asyncio.Event()

    async def slow(app, key, remote):
        await release.wait()

    auth.authorize = slow
    c, status = await publisher(srv)  # its own 5 s reply timeout: the authority never answers
    assert status["level"] == "error" and status["code"] == "NetStream.Publish.Denied"
    assert not release.is_set()  # refused by the timeout, not because the authority answered
    assert await c.wait_closed(3)
    await c.close()
    release.set()
