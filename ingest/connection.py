"""One RTMP connection: deadlines + auth + registry + translate.

`RtmpConnection` reads with a timeout and a size limit, feeds the sans-I/O
`ServerSession`, writes its replies under a lock with drain() and a write
timeout, and turns an accepted publish into hub items: StreamStart,
CodecConfig/Frame from the FLV `MediaParser`, StreamEnd. While publishing it
is the publisher object the StreamRegistry holds (`live_id`, `drop()`,
`stats()`). Every limit is a field of `IngestLimits` (docs/limits.md).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .authorization import PublishInfo, PublishRefused
from .errors import RemoteProtocolError, UnsupportedCodec
from .flv import MediaParser
from .frames import VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from .session import (
    NEED_DATA,
    ConnectRequest,
    HandshakeComplete,
    MediaData,
    Metadata,
    PlayRequest,
    PublishRequest,
    ServerSession,
    Unpublished,
)

if TYPE_CHECKING:
    from .server import RtmpServer

log = logging.getLogger("ingest.server")  # one logger for the whole RTMP server


class _Closing(Exception):
    """Internal: end the connection loop with this reason."""

    def __init__(self, reason: str, *, linger: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.linger = linger


class RtmpConnection:
    """One TCP connection; while publishing, it is the publisher object the
    registry holds (`live_id`, `drop()`, `stats()`)."""

    def __init__(self, server: "RtmpServer", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, address: str, remote: str) -> None:
        self._server = server
        self._limits = server.limits
        self._reader = reader
        self._writer = writer
        self.address = address
        self.remote = remote
        lim = self._limits
        self.session = ServerSession(
            max_message_size=lim.max_message_size,
            max_chunk_streams=lim.max_chunk_streams,
            max_buffered_bytes=lim.max_buffered_bytes,
            window_ack_size=lim.window_ack_size,
            out_chunk_size=lim.out_chunk_size,
            max_streams=lim.max_streams,
            max_name_length=lim.max_name_length,
            amf_max_depth=lim.amf_max_depth,
            amf_max_items=lim.amf_max_items,
        )
        self._write_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._drop_reason: str | None = None
        self._deadline: float | None = self._loop.time() + lim.handshake_timeout
        self._deadline_reason = "handshake timeout"
        self._app = ""
        # Publish state.
        self.live_id: int | None = None
        self._grant: Any = None
        self._hub: Any = None
        self._session_id = 0
        self._parser: Any = None
        self._info: PublishInfo | None = None
        self._publish_started = 0.0
        self._bytes_at_publish = 0
        self._first_media: float | None = None
        self._update_task: asyncio.Task | None = None
        self._buckets: deque[list] = deque()  # [bucket, bytes, video frames]

    # ------------------------------------------------ publisher interface

    def drop(self, reason: str) -> None:
        """Close the connection soon; callable from any task of the loop."""
        if self._drop_reason is None:
            self._drop_reason = reason
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    def stats(self) -> dict:
        now = self._loop.time()
        lim = self._limits
        oldest = int((now - lim.stats_window) * 4)
        nbytes = frames = 0
        for bucket, b, f in self._buckets:
            if bucket > oldest:
                nbytes += b
                frames += f
        window = lim.stats_window
        if self._first_media is not None:
            window = max(0.25, min(window, now - self._first_media))
        info = self._info
        return {
            "remote": self.remote,
            "encoder": info.encoder if info else None,
            "video_codec": info.video_codec if info else None,
            "audio_codec": info.audio_codec if info else None,
            "bitrate_kbps": round(nbytes * 8 / window / 1000, 1),
            "fps": round(frames / window, 2),
            "uptime_s": round(now - self._publish_started, 1) if self._grant else 0.0,
            "bytes_received": self.session.bytes_received - self._bytes_at_publish,
        }

    # ------------------------------------------------ I/O

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if not data:
            return
        async with self._write_lock:
            if self._writer.transport.is_closing():
                raise _Closing(self._drop_reason or "disconnected")
            try:
                self._writer.write(data)
                async with asyncio.timeout(self._limits.write_timeout):
                    await self._writer.drain()
            except TimeoutError:
                raise _Closing("write timeout") from None
            except (ConnectionError, OSError):
                raise _Closing(self._drop_reason or "disconnected") from None

    async def run(self) -> None:
        reason = "disconnected"
        linger = False
        try:
            await self._loop_events()
        except _Closing as exc:
            reason, linger = exc.reason, exc.linger
        except RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.info("rtmp %s: %s", self.remote, reason)
            if self.session.failed_attempt:
                self._server.failures.record(self.address)
            linger = True
        except Exception:  # a bug of ours must not leak the publish
            log.exception("rtmp %s: internal error", self.remote)
            reason = "internal error"
        finally:
            reason = self._drop_reason or reason
            log.debug("rtmp %s: closing: %s", self.remote, reason)
            try:
                await self._end_publish(reason)
            finally:
                await self._close(linger)

    async def _close(self, linger: bool) -> None:
        try:
            if linger and not self._writer.transport.is_closing():
                try:
                    await self._flush()
                except _Closing:
                    pass
                else:
                    if self._writer.can_write_eof():
                        self._writer.write_eof()
                    # Let the client read the refusal: wait for its close.
                    try:
                        async with asyncio.timeout(self._limits.refuse_linger):
                            while await self._reader.read(self._limits.read_size):
                                pass
                    except (TimeoutError, ConnectionError, OSError):
                        pass
        finally:
            if self._drop_reason:
                self._writer.transport.abort()
            else:
                self._writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()
            except (TimeoutError, ConnectionError, OSError):
                pass

    async def _loop_events(self) -> None:
        lim = self._limits
        while True:
            while True:
                ev = self.session.next_event()
                if ev is NEED_DATA:
                    break
                await self._handle(ev)
            await self._flush()
            if self._drop_reason is not None:
                raise _Closing(self._drop_reason)
            now = self._loop.time()
            timeout = lim.idle_timeout
            reason = "idle timeout"
            if self._deadline is not None and self._deadline - now <= timeout:
                timeout = self._deadline - now
                reason = self._deadline_reason
                if timeout <= 0:
                    raise _Closing(reason)
            try:
                async with asyncio.timeout(timeout):
                    data = await self._reader.read(lim.read_size)
            except TimeoutError:
                raise _Closing(reason) from None
            except (ConnectionError, OSError):
                data = b""
            if not data:
                raise _Closing(self._drop_reason or "disconnected")
            self.session.receive_data(data)

    # ------------------------------------------------ events

    async def _handle(self, ev) -> None:
        lim = self._limits
        if isinstance(ev, MediaData):
            await self._media(ev)
        elif isinstance(ev, HandshakeComplete):
            self._set_deadline(lim.publish_timeout, "no publish before the deadline")
        elif isinstance(ev, ConnectRequest):
            await self._connect(ev)
        elif isinstance(ev, PublishRequest):
            await self._publish(ev)
        elif isinstance(ev, Metadata):
            if ev.error:
                log.info("rtmp %s: metadata partly unreadable (%s), kept what decoded",
                         self.remote, ev.error)
            if self._info is not None:
                self._info.metadata = _plain(ev.values)
                enc = ev.values.get("encoder")
                if isinstance(enc, str) and enc:
                    self._info.encoder = enc[:256]
        elif isinstance(ev, Unpublished):
            await self._end_publish(f"unpublished ({ev.command})")
            self._set_deadline(lim.publish_timeout, "no publish before the deadline")
        elif isinstance(ev, PlayRequest):
            self.session.refuse_play(
                "This server only accepts publishing; watch the stream over HLS."
            )
            raise _Closing("play refused", linger=True)

    def _set_deadline(self, seconds: float | None, reason: str = "") -> None:
        self._deadline = None if seconds is None else self._loop.time() + seconds
        self._deadline_reason = reason

    async def _connect(self, ev: ConnectRequest) -> None:
        srv = self._server
        if srv.failures.blocked(self.address):
            log.warning("rtmp %s: refused at connect: too many failed publish attempts",
                        self.remote)
            self.session.reject_connect("Too many failed publish attempts; try again later.")
            raise _Closing("too many failed publish attempts", linger=True)
        if ev.app != srv.app_name:
            srv.failures.record(self.address)
            log.info("rtmp %s: refused connect to unknown app %r", self.remote, ev.app)
            self.session.reject_connect(f"Unknown application {ev.app!r}.")
            raise _Closing("unknown application", linger=True)
        self._app = ev.app
        self.session.accept_connect()

    async def _publish(self, ev: PublishRequest) -> None:
        srv = self._server
        try:
            async with asyncio.timeout(self._limits.authorize_timeout):
                grant = await srv.authority.authorize(self._app, ev.stream_key, self.remote)
        except PublishRefused as exc:
            srv.failures.record(self.address)
            log.info("rtmp %s: publish refused: %s", self.remote, exc.description)
            self.session.refuse_publish(exc.description, exc.status)
            raise _Closing("publish refused", linger=True) from None
        except TimeoutError:
            log.warning("rtmp %s: authority did not answer within %.1f s", self.remote,
                        self._limits.authorize_timeout)
            self.session.refuse_publish("Authorization timed out, try again.",
                                        "NetStream.Publish.Denied")
            raise _Closing("authority timeout", linger=True) from None
        except Exception:
            log.exception("rtmp %s: authority failed", self.remote)
            self.session.refuse_publish("Internal error, try again.", "NetStream.Publish.Denied")
            raise _Closing("authority error", linger=True) from None
        self._grant = grant
        self._publish_started = self._loop.time()
        self._bytes_at_publish = self.session.bytes_received
        self._info = PublishInfo(self.remote, self.session.flash_ver or None, None, None, {})
        if self._drop_reason is not None:
            raise _Closing(self._drop_reason)
        self._parser = MediaParser()
        self.live_id = grant.live_id
        self._hub, self._session_id = srv.registry.attach(grant.live_id, self)
        self._hub.publish(StreamStart(grant.live_id, self._session_id, {}))
        self.session.accept_publish()
        log.info("rtmp %s: publishing live %s (session %s)", self.remote, grant.live_id,
                 self._session_id)
        self._set_deadline(self._limits.first_media_timeout, "no media after publish")

    async def _media(self, ev: MediaData) -> None:
        if self._drop_reason is not None:
            # Dropped (e.g. taken over): messages already read must not reach
            # the hub after the new publisher's StreamStart.
            return
        now = self._loop.time()
        if self._first_media is None:
            self._first_media = now
            self._set_deadline(None)
        try:
            if ev.kind == "video":
                items = self._parser.video(ev.timestamp, ev.payload)
            else:
                items = self._parser.audio(ev.timestamp, ev.payload)
        except UnsupportedCodec as exc:
            log.warning("rtmp %s: live %s: unsupported codec: %s", self.remote, self.live_id, exc)
            raise _Closing(f"unsupported codec: {exc}") from None
        video_frames = 0
        info = self._info
        assert info is not None
        for item in items:
            if isinstance(item, CodecConfig):
                if item.kind == VIDEO:
                    info.video_codec = item.codec
                else:
                    info.audio_codec = item.codec
            elif isinstance(item, Frame) and item.kind == VIDEO:
                video_frames += 1
            self._hub.publish(item)
        bucket = int(now * 4)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1] += len(ev.payload)
            self._buckets[-1][2] += video_frames
        else:
            self._buckets.append([bucket, len(ev.payload), video_frames])
            oldest = int((now - self._limits.stats_window) * 4)
            while self._buckets and self._buckets[0][0] <= oldest:
                self._buckets.popleft()
        if self._update_task is None and (
            (info.video_codec and info.audio_codec)
            or now - self._first_media >= self._limits.codec_probe_timeout
        ):
            snapshot = PublishInfo(info.remote, info.encoder, info.video_codec,
                                   info.audio_codec, dict(info.metadata))
            self._update_task = asyncio.create_task(self._update(self._grant, snapshot))

    async def _update(self, grant: Any, info: PublishInfo) -> None:
        try:
            await self._server.authority.update(grant, info)
        except Exception:
            log.exception("rtmp %s: authority.update failed", self.remote)

    async def _end_publish(self, reason: str) -> None:
        grant, self._grant = self._grant, None
        if grant is None:
            return
        received = self.session.bytes_received - self._bytes_at_publish
        try:
            if self._hub is not None:
                self._hub.publish(StreamEnd(grant.live_id, self._session_id, reason))
                self._server.registry.detach(grant.live_id, self)
        except Exception:
            log.exception("rtmp %s: ending the hub stream failed", self.remote)
        finally:
            self._hub = None
            self._parser = None
            self.live_id = None
            self._first_media = None
            self._buckets.clear()
            task, self._update_task = self._update_task, None
            if task is not None:
                try:
                    async with asyncio.timeout(5.0):
                        await asyncio.shield(task)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            log.info("rtmp %s: live %s ended: %s", self.remote, grant.live_id, reason)
            try:
                await self._server.authority.ended(grant, bytes_received=received, reason=reason)
            except Exception:
                log.exception("rtmp %s: authority.ended failed", self.remote)


def _plain(values: dict, depth: int = 0) -> dict:
    """Metadata as plain JSON-friendly values (strings, numbers, bools,
    nested dicts/lists); anything else becomes its repr, capped."""
    out: dict = {}
    for k, v in values.items():
        out[str(k)[:256]] = _plain_value(v, depth)
    return out


def _plain_value(v, depth: int):
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return v[:1024]
    if depth < 4 and isinstance(v, dict):
        return _plain(v, depth + 1)
    if depth < 4 and isinstance(v, list):
        return [_plain_value(x, depth + 1) for x in v[:256]]
    return repr(v)[:256]
