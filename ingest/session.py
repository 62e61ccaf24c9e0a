"""The server side of an RTMP publish session, sans-I/O (RTMP 1.0 spec
section 7.2 "Command messages", 7.3 "Message exchange examples", and what
OBS/FFmpeg/GStreamer send: see docs/ingest.md).

`ServerSession` composes the handshake, the chunk reader/writer and message
decoding. Feed it bytes with `receive_data()`, pull events with
`next_event()` until NEED_DATA, answer the decisions it cannot take itself
(`accept_connect`, `reject_connect`, `accept_publish`, `refuse_publish`,
`refuse_play`) and send whatever `data_to_send()` returns.

It answers on its own what needs no decision: acknowledgements, ping
responses, releaseStream/FCPublish/createStream replies.

The session's states and the events that move it are one table,
`TRANSITIONS`; a (state, event) pair that is not in it is a protocol error
from the peer (RemoteProtocolError) or a bug of ours (LocalProtocolError).
docs/ingest.md shows the diagram generated from the table.
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass

from . import amf0
from . import messages as m
from .chunk import NEED_DATA, ChunkReader, ChunkWriter, RawMessage, _NeedData
from .errors import LocalProtocolError, RemoteProtocolError
from .handshake import ServerHandshake

log = logging.getLogger(__name__)


class State(enum.Enum):
    HANDSHAKE = "HANDSHAKE"
    AWAIT_CONNECT = "AWAIT_CONNECT"
    CONNECT_PENDING = "CONNECT_PENDING"  # connect received, app decision pending
    CONNECTED = "CONNECTED"
    PUBLISH_PENDING = "PUBLISH_PENDING"  # publish received, authorization pending
    PUBLISHING = "PUBLISHING"
    PLAY_PENDING = "PLAY_PENDING"  # play received, refusal pending
    CLOSED = "CLOSED"


class Ev(enum.Enum):
    # from the peer
    HANDSHAKE_DONE = "handshake done"
    CONNECT = "connect"
    PUBLISH = "publish"
    PLAY = "play"
    MEDIA = "media"
    METADATA = "metadata"
    UNPUBLISH = "FCUnpublish / deleteStream / closeStream"
    # from us
    ACCEPT_CONNECT = "accept_connect()"
    REJECT_CONNECT = "reject_connect()"
    ACCEPT_PUBLISH = "accept_publish()"
    REFUSE_PUBLISH = "refuse_publish()"
    REFUSE_PLAY = "refuse_play()"
    CLOSE = "close() / protocol error"


S = State
TRANSITIONS: dict[tuple[State, Ev], State] = {
    (S.HANDSHAKE, Ev.HANDSHAKE_DONE): S.AWAIT_CONNECT,
    (S.AWAIT_CONNECT, Ev.CONNECT): S.CONNECT_PENDING,
    (S.CONNECT_PENDING, Ev.ACCEPT_CONNECT): S.CONNECTED,
    (S.CONNECT_PENDING, Ev.REJECT_CONNECT): S.CLOSED,
    (S.CONNECTED, Ev.PUBLISH): S.PUBLISH_PENDING,
    (S.CONNECTED, Ev.PLAY): S.PLAY_PENDING,
    (S.PLAY_PENDING, Ev.REFUSE_PLAY): S.CLOSED,
    (S.PUBLISH_PENDING, Ev.ACCEPT_PUBLISH): S.PUBLISHING,
    (S.PUBLISH_PENDING, Ev.REFUSE_PUBLISH): S.CLOSED,
    (S.PUBLISHING, Ev.MEDIA): S.PUBLISHING,
    (S.PUBLISHING, Ev.METADATA): S.PUBLISHING,
    (S.PUBLISHING, Ev.UNPUBLISH): S.CONNECTED,
}
for _s in State:
    if _s is not S.CLOSED:
        TRANSITIONS[(_s, Ev.CLOSE)] = S.CLOSED
del _s

_REMOTE_EVENTS = {
    Ev.HANDSHAKE_DONE, Ev.CONNECT, Ev.PUBLISH, Ev.PLAY, Ev.MEDIA, Ev.METADATA, Ev.UNPUBLISH,
}


def state_diagram() -> str:
    """Mermaid state diagram generated from TRANSITIONS (for docs/ingest.md)."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.HANDSHAKE.value}"]
    for (src, ev), dst in TRANSITIONS.items():
        if ev is Ev.CLOSE and src is not S.HANDSHAKE:
            continue
        label = ev.value if ev is not Ev.CLOSE else "close() / protocol error (from every state)"
        lines.append(f"    {src.value} --> {dst.value}: {label}")
    lines.append(f"    {S.CLOSED.value} --> [*]")
    return "\n".join(lines)


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    digest_scheme: int | None  # None: simple handshake


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    app: str  # normalised: no quotes, no ?query, no trailing slash
    tc_url: str
    flash_ver: str
    command_object: dict


@dataclass(frozen=True, slots=True)
class PublishRequest:
    stream_key: str  # the publish name without its ?query
    query: str
    publish_type: str  # "live", "record", "append"
    msid: int


@dataclass(frozen=True, slots=True)
class PlayRequest:
    stream_name: str
    msid: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """onMetaData (with @setDataFrame stripped), keys as sent."""

    values: dict
    error: str | None = None  # set when a garbled field stopped decoding


@dataclass(frozen=True, slots=True)
class MediaData:
    kind: str  # "audio" or "video"
    timestamp: int  # u32 ms as sent
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unpublished:
    command: str  # FCUnpublish, deleteStream or closeStream


Event = (
    HandshakeComplete | ConnectRequest | PublishRequest | PlayRequest | Metadata | MediaData
    | Unpublished
)


# ---------------------------------------------------------------- names

MAX_NAME_LENGTH = 256


def _strip_quotes(s: str) -> str:
    # Old GStreamer rtmpsink leaked quotes into tcUrl (bluenviron/mediamtx#1177).
    return s.strip().strip("'\"").strip()


def valid_name(name: str, *, allow_slash: bool = False, max_length: int = MAX_NAME_LENGTH) -> bool:
    """A name we are willing to log and look up: 1..max_length printable
    ASCII characters without spaces, quotes or backslashes."""
    if not 0 < len(name) <= max_length:
        return False
    for ch in name:
        o = ord(ch)
        if o < 0x21 or o > 0x7E or ch in "\"'\\<>" or (ch == "/" and not allow_slash):
            return False
    return True


def split_query(name: str) -> tuple[str, str]:
    base, _, query = name.partition("?")
    return base, query


def normalize_app(app: str) -> str:
    base, _ = split_query(_strip_quotes(app))
    return base.rstrip("/")


@dataclass
class _Settings:
    window_ack_size: int
    peer_bandwidth: int
    out_chunk_size: int
    max_streams: int
    max_name_length: int
    amf_max_depth: int
    amf_max_items: int


class ServerSession:
    """Sans-I/O RTMP server connection for one publisher."""

    def __init__(
        self,
        *,
        max_message_size: int = 8 << 20,
        max_chunk_streams: int = 64,
        max_buffered_bytes: int = 16 << 20,
        window_ack_size: int = 2_500_000,
        out_chunk_size: int = 4096,
        max_streams: int = 8,
        max_name_length: int = MAX_NAME_LENGTH,
        amf_max_depth: int = amf0.DEFAULT_MAX_DEPTH,
        amf_max_items: int = amf0.DEFAULT_MAX_ITEMS,
        random_bytes=None,
    ) -> None:
        self.state = S.HANDSHAKE
        self._hs = ServerHandshake() if random_bytes is None else ServerHandshake(random_bytes=random_bytes)
        self._reader = ChunkReader(
            max_message_size=max_message_size,
            max_chunk_streams=max_chunk_streams,
            max_buffered_bytes=max_buffered_bytes,
        )
        self._writer = ChunkWriter()
        self._cfg = _Settings(
            window_ack_size, window_ack_size, out_chunk_size, max_streams, max_name_length,
            amf_max_depth, amf_max_items,
        )
        self._out = bytearray()
        self._events: deque = deque()
        self._connect_txn = 1.0
        self._object_encoding = 0.0
        self._next_stream_id = 1
        self._streams: set[int] = set()
        self.publish_msid = 0
        self.stream_key = ""
        self.app = ""
        self.flash_ver = ""
        self._fcpublish_pending = False
        # Acknowledgements: the window the peer asked for (or ours until it does).
        self._ack_window = window_ack_size
        self._last_ack = 0
        self.ignored_messages = 0
        self.failed_attempt = False  # we refused a connect or publish

    # ------------------------------------------------------------ plumbing

    @property
    def bytes_received(self) -> int:
        return self._reader.bytes_received

    def _transition(self, ev: Ev) -> None:
        nxt = TRANSITIONS.get((self.state, ev))
        if nxt is None:
            if ev in _REMOTE_EVENTS:
                self._fail()
                raise RemoteProtocolError(f"unexpected {ev.value} in state {self.state.value}")
            raise LocalProtocolError(f"{ev.value} not allowed in state {self.state.value}")
        self.state = nxt

    def _fail(self) -> None:
        self.state = S.CLOSED

    def _send(self, msg) -> None:
        self._out += self._writer.write(msg.to_raw())

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        if self.state is not S.CLOSED:
            self._transition(Ev.CLOSE)

    def receive_data(self, data: bytes) -> None:
        if self.state is S.CLOSED:
            return
        try:
            if self.state is S.HANDSHAKE:
                self._out += self._hs.receive_data(data)
                if self._hs.complete:
                    self._transition(Ev.HANDSHAKE_DONE)
                    self._events.append(HandshakeComplete(self._hs.scheme))
                    self._reader.receive_data(self._hs.unused_data)
            else:
                self._reader.receive_data(data)
        except RemoteProtocolError:
            self._fail()
            raise

    def next_event(self) -> Event | _NeedData:
        try:
            while not self._events:
                if self.state in (S.HANDSHAKE, S.CLOSED):
                    return NEED_DATA
                raw = self._reader.next_message()
                self._maybe_ack()
                if raw is NEED_DATA:
                    return NEED_DATA
                assert isinstance(raw, RawMessage)
                self._handle(raw)
            return self._events.popleft()
        except RemoteProtocolError:
            self._fail()
            raise

    def _maybe_ack(self) -> None:
        received = self._reader.bytes_received
        if self._ack_window and received - self._last_ack >= self._ack_window:
            self._last_ack = received
            self._send(m.Acknowledgement(received))

    # ------------------------------------------------------------ incoming

    def _handle(self, raw: RawMessage) -> None:
        amf_limits = {"max_depth": self._cfg.amf_max_depth, "max_items": self._cfg.amf_max_items}
        if raw.type_id == m.AGGREGATE:
            for sub in m.split_aggregate(raw, **amf_limits):
                self._handle_typed(sub)
            return
        self._handle_typed(m.decode(raw, **amf_limits))

    def _handle_typed(self, msg) -> None:
        if isinstance(msg, m.Media):
            if self.state is S.PUBLISHING and msg.msid in (self.publish_msid, 0):
                self._transition(Ev.MEDIA)
                kind = "video" if msg.type_id == m.VIDEO else "audio"
                self._events.append(MediaData(kind, msg.timestamp, msg.payload))
            else:
                self.ignored_messages += 1
        elif isinstance(msg, m.Command):
            self._command(msg)
        elif isinstance(msg, m.DataMessage):
            self._data(msg)
        elif isinstance(msg, m.WindowAckSize):
            if msg.size:
                self._ack_window = msg.size
        elif isinstance(msg, m.UserControl):
            if msg.event == m.UC_PING_REQUEST:
                self._send(m.UserControl.ping_response(msg.value))
        # SetChunkSize/Abort were applied by the reader; Acknowledgement,
        # SetPeerBandwidth and unknown types need nothing from a publish server.

    def _data(self, msg: m.DataMessage) -> None:
        values = list(msg.values)
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if not values or values[0] != "onMetaData":
            self.ignored_messages += 1
            return
        if self.state is not S.PUBLISHING:
            self.ignored_messages += 1
            return
        meta = values[1] if len(values) > 1 else {}
        if isinstance(meta, amf0.TypedObject):
            meta = meta.members
        if not isinstance(meta, dict):
            meta = {}
        self._transition(Ev.METADATA)
        self._events.append(Metadata(dict(meta), msg.error))

    def _command(self, cmd: m.Command) -> None:
        name = cmd.name
        if name == "connect":
            self._transition(Ev.CONNECT)
            obj = cmd.command_object if isinstance(cmd.command_object, dict) else {}
            self._connect_txn = cmd.transaction_id
            enc = obj.get("objectEncoding", 0.0)
            self._object_encoding = float(enc) if isinstance(enc, (int, float)) else 0.0
            app_raw = obj.get("app", "")
            app = normalize_app(app_raw if isinstance(app_raw, str) else "")
            tc = obj.get("tcUrl", "")
            fv = obj.get("flashVer", "")
            self.app = app
            self.flash_ver = fv[:256] if isinstance(fv, str) else ""
            tc_url = _strip_quotes(tc)[:1024] if isinstance(tc, str) else ""
            if not valid_name(app, allow_slash=True, max_length=self._cfg.max_name_length):
                self.reject_connect("invalid application name")
                raise RemoteProtocolError(
                    "invalid application name", status="NetConnection.Connect.Rejected"
                )
            self._events.append(ConnectRequest(app, tc_url, self.flash_ver, obj))
            return
        if self.state in (S.HANDSHAKE, S.AWAIT_CONNECT, S.CONNECT_PENDING):
            raise RemoteProtocolError(f"command {name!r} before connect")
        if name in ("releaseStream", "FCPublish"):
            # Answered as SRS does; OBS and FFmpeg do not wait for these.
            if cmd.transaction_id:
                self._send(m.Command("_result", cmd.transaction_id, None, [amf0.Undefined]))
            if name == "FCPublish":
                self._fcpublish_pending = True
        elif name == "createStream":
            if len(self._streams) >= self._cfg.max_streams:
                raise RemoteProtocolError("too many createStream calls")
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(sid)
            # FFmpeg requires exactly "_result", txn, null, number.
            self._send(m.Command("_result", cmd.transaction_id, None, [float(sid)]))
        elif name == "publish":
            self._transition(Ev.PUBLISH)
            raw_name = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
            ptype = cmd.args[1] if len(cmd.args) > 1 and isinstance(cmd.args[1], str) else "live"
            key, query = split_query(_strip_quotes(raw_name))
            self.publish_msid = cmd.msid
            self.stream_key = key
            if not valid_name(key, max_length=self._cfg.max_name_length):
                self.refuse_publish("invalid stream key", "NetStream.Publish.BadName")
                raise RemoteProtocolError(
                    "invalid stream key", status="NetStream.Publish.BadName"
                )
            self._events.append(PublishRequest(key, query[:1024], ptype[:32], cmd.msid))
        elif name == "play":
            self._transition(Ev.PLAY)
            raw_name = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
            self.publish_msid = cmd.msid
            self._events.append(PlayRequest(raw_name[: self._cfg.max_name_length], cmd.msid))
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if name == "deleteStream":
                sid = cmd.args[0] if cmd.args else None
                if isinstance(sid, (int, float)) and not isinstance(sid, bool):
                    self._streams.discard(int(sid))
                    if self.state is S.PUBLISHING and int(sid) != self.publish_msid:
                        return
            if self.state is S.PUBLISHING:
                self._transition(Ev.UNPUBLISH)
                self._events.append(Unpublished(name))
        else:
            # _checkbw, getStreamLength, _result/_error of our own calls...
            self.ignored_messages += 1

    # ------------------------------------------------------------ decisions

    def _status(self, level: str, code: str, description: str, **extra) -> None:
        info = {"level": level, "code": code, "description": description}
        info.update(extra)
        self._send(
            m.Command("onStatus", 0.0, None, [info], self.publish_msid, m.CSID_STREAM_STATUS)
        )

    def accept_connect(self) -> None:
        self._transition(Ev.ACCEPT_CONNECT)
        self._send(m.WindowAckSize(self._cfg.window_ack_size))
        self._send(m.SetPeerBandwidth(self._cfg.peer_bandwidth, m.LIMIT_DYNAMIC))
        self._send(m.SetChunkSize(self._cfg.out_chunk_size))
        self._writer.set_chunk_size(self._cfg.out_chunk_size)
        self._send(
            m.Command(
                "_result", self._connect_txn,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                [{
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": self._object_encoding,
                }],
            )
        )

    def reject_connect(self, description: str, code: str = "NetConnection.Connect.Rejected") -> None:
        self._transition(Ev.REJECT_CONNECT)
        self.failed_attempt = True
        self._send(
            m.Command(
                "_error", self._connect_txn, None,
                [{"level": "error", "code": code, "description": description}],
            )
        )

    def accept_publish(self) -> None:
        self._transition(Ev.ACCEPT_PUBLISH)
        self._send(m.UserControl.stream_begin(self.publish_msid))
        if self._fcpublish_pending:
            self._fcpublish_pending = False
            self._send(
                m.Command(
                    "onFCPublish", 0.0, None,
                    [{"code": "NetStream.Publish.Start", "description": self.stream_key}],
                )
            )
        self._status(
            "status", "NetStream.Publish.Start", f"{self.stream_key} is now published.",
            details=self.stream_key,
        )

    def refuse_publish(self, description: str, status: str = "NetStream.Publish.BadName") -> None:
        self._transition(Ev.REFUSE_PUBLISH)
        self.failed_attempt = True
        self._status("error", status, description)

    def refuse_play(self, description: str) -> None:
        self._transition(Ev.REFUSE_PLAY)
        self._status("error", "NetStream.Play.Failed", description)
