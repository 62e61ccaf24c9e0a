"""A tiny asyncio RTMP publishing client for tests, built on the ingest's
own sans-I/O classes (handshake, chunk reader/writer, messages, AMF0), so a
test can read exactly which onStatus the server sends."""
from __future__ import annotations

import asyncio
import contextlib

from ingest import messages as m
from ingest.chunk import NEED_DATA, ChunkReader, ChunkWriter
from ingest.frames import StreamEnd
from ingest.handshake import ClientHandshake
from ingest.limits import IngestLimits
from ingest.registry import StreamRegistry


class RtmpTestClient:
    def __init__(self, host: str, port: int, *, digest_scheme: int | None = None,
                 chunk_size: int = 4096, compress: bool = True) -> None:
        self.host = host
        self.port = port
        self.handshake = ClientHandshake(digest_scheme)
        self.reader_state = ChunkReader(max_message_size=1 << 20)
        # compress=False: every message gets a fmt-0 header with its absolute
        # timestamp (extended past 0xFFFFFF), as some hardware encoders send.
        self.writer_state = ChunkWriter(compress=compress)
        self.chunk_size = chunk_size
        self.txn = 1
        self.received: list = []  # every typed message received, in order
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, *, handshake: bool = True) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        if handshake:
            await self.do_handshake()

    async def do_handshake(self, timeout: float = 5) -> None:
        await self.send_raw(self.handshake.initial_bytes())
        async with asyncio.timeout(timeout):
            while not self.handshake.complete:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed during handshake")
                reply = self.handshake.receive_data(data)
                if reply:
                    await self.send_raw(reply)
        self.reader_state.receive_data(self.handshake.unused_data)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, msg, csid: int | None = None) -> None:
        raw = msg.to_raw() if csid is None else msg.to_raw(csid)
        await self.send_raw(self.writer_state.write(raw))

    async def set_chunk_size(self, size: int) -> None:
        await self.send(m.SetChunkSize(size))
        self.writer_state.set_chunk_size(size)

    def _next_txn(self) -> float:
        self.txn += 1
        return float(self.txn)

    async def next_message(self, timeout: float = 5):
        """The next typed message from the server; None at EOF."""
        async with asyncio.timeout(timeout):
            while True:
                raw = self.reader_state.next_message()
                if raw is not NEED_DATA:
                    msg = m.decode(raw)
                    self.received.append(msg)
                    return msg
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return None
                self.reader_state.receive_data(data)

    async def next_command(self, timeout: float = 5) -> m.Command | None:
        while True:
            msg = await self.next_message(timeout)
            if msg is None or isinstance(msg, m.Command):
                return msg

    async def connect(self, app: str = "live", *, chunk_size: bool = True) -> m.Command | None:
        if chunk_size:
            await self.set_chunk_size(self.chunk_size)  # as OBS does before connect
        await self.send(m.Command("connect", 1.0, {
            "app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; livecast-test)",
            "tcUrl": f"rtmp://{self.host}:{self.port}/{app}",
        }))
        return await self.next_command()

    async def create_stream(self) -> int:
        await self.send(m.Command("releaseStream", self._next_txn(), None, ["x"]))
        await self.send(m.Command("FCPublish", self._next_txn(), None, ["x"]))
        txn = self._next_txn()
        await self.send(m.Command("createStream", txn, None))
        while True:
            cmd = await self.next_command()
            if cmd is None:
                raise ConnectionError("closed before createStream _result")
            if cmd.name == "_result" and cmd.transaction_id == txn:
                return int(cmd.args[0])

    async def publish(self, key: str, msid: int = 1) -> dict | None:
        await self.send(m.Command("publish", 0.0, None, [key, "live"], msid, 4))
        return await self.next_status()

    async def play(self, name: str, msid: int = 1) -> dict | None:
        await self.send(m.Command("play", 0.0, None, [name], msid, 4))
        return await self.next_status()

    async def next_status(self, timeout: float = 5) -> dict | None:
        """The info object of the next onStatus (None at EOF)."""
        while True:
            cmd = await self.next_command(timeout)
            if cmd is None:
                return None
            if cmd.name == "onStatus":
                return cmd.args[0]

    def media_bytes(self, kind: str, timestamp: int, payload: bytes, msid: int = 1) -> bytes:
        """The chunks of one audio/video message, advancing the chunk state
        as if they were sent (for a test that delivers them another way)."""
        type_id = m.VIDEO if kind == "video" else m.AUDIO
        return self.writer_state.write(m.Media(type_id, timestamp, msid, payload).to_raw())

    async def send_media(self, kind: str, timestamp: int, payload: bytes, msid: int = 1) -> None:
        await self.send_raw(self.media_bytes(kind, timestamp, payload, msid))

    async def start_publish(self, key: str = "good") -> dict | None:
        """Connect, createStream and publish; the onStatus of the publish."""
        await self.open()
        await self.connect()
        return await self.publish(key, await self.create_stream())

    async def wait_closed(self, timeout: float = 5) -> bool:
        """True when the server closes the connection within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while await self.next_message(timeout) is not None:
                    pass
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class TestGrant:
    def __init__(self, live_id: int, room_id: str) -> None:
        self.live_id = live_id
        self.room_id = room_id


class DictAuthority:
    """A PublishAuthority over a dict {stream key: live_id}, recording calls."""

    def __init__(self, keys: dict[str, int]) -> None:
        from ingest.server import PublishRefused

        self._refused = PublishRefused
        self.keys = dict(keys)
        self.authorized: list[tuple[str, str, str]] = []
        self.updates: list = []
        self.ended_calls: list[tuple[int, int, str]] = []
        self.ended_event = asyncio.Event()

    async def authorize(self, app: str, stream_key: str, remote: str) -> TestGrant:
        self.authorized.append((app, stream_key, remote))
        live_id = self.keys.get(stream_key)
        if live_id is None:
            raise self._refused("Unknown stream key.")
        return TestGrant(live_id, f"room{live_id}")

    async def update(self, grant, info) -> None:
        self.updates.append((grant.live_id, info))

    async def ended(self, grant, *, bytes_received: int, reason: str) -> None:
        self.ended_calls.append((grant.live_id, bytes_received, reason))
        self.ended_event.set()

    async def wait_ended(self, count: int = 1, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.ended_calls) < count:
                self.ended_event.clear()
                await self.ended_event.wait()


class IngestHarness:
    """A running RtmpServer with a real StreamRegistry and a DictAuthority;
    every hub it creates gets a consumer named "test" in `consumers`."""

    def __init__(self, srv, auth: DictAuthority, registry: StreamRegistry) -> None:
        self.srv = srv
        self.auth = auth
        self.registry = registry
        self.consumers: list = []
        registry.add_listener(lambda hub: self.consumers.append(hub.subscribe("test")))

    def url(self, key: str = "good") -> str:
        return f"rtmp://127.0.0.1:{self.srv.port}/live/{key}"

    async def items(self, until_end: bool = True, timeout: float = 15) -> list:
        """The first hub's items up to its first StreamEnd (or its close)."""
        out: list = []
        consumer = self.consumers[0]
        async with asyncio.timeout(timeout):
            while True:
                item = await consumer.get()
                if item is None:
                    return out
                out.append(item)
                if until_end and isinstance(item, StreamEnd):
                    return out


@contextlib.asynccontextmanager
async def running_ingest(keys: dict[str, int] | None = None, *, limits: IngestLimits | None = None,
                         authority: DictAuthority | None = None):
    """An IngestHarness on 127.0.0.1 port 0, stopped on exit."""
    from ingest.server import RtmpServer

    auth = authority or DictAuthority(keys or {"good": 1, "other": 2})
    registry = StreamRegistry(end_grace_s=0)
    srv = RtmpServer(auth, registry, limits=limits or IngestLimits(refuse_linger=0.5))
    await srv.start()
    try:
        yield IngestHarness(srv, auth, registry)
    finally:
        await srv.stop()
        await registry.close()


# AAC-LC 48 kHz stereo sequence header: the smallest valid media message.
AAC_SEQUENCE_HEADER = bytes.fromhex("af00 1190")
