"""RTMP messages (RTMP 1.0 spec sections 5.4, 6.2, 7.1): protocol control,
user control, command and data messages, audio/video, aggregate.

`decode(RawMessage)` gives one typed message (aggregates give several through
`split_aggregate`); each typed message has `to_raw()` for sending.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import amf0
from .chunk import RawMessage
from .errors import RemoteProtocolError

# Message type ids (spec 5.4 and 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# Chunk stream ids we send on (conventional, as FMS/nginx-rtmp/FFmpeg use).
CSID_PROTOCOL = 2  # spec 5.4: protocol control goes on csid 2, msid 0
CSID_COMMAND = 3
CSID_STREAM_STATUS = 5

# User control event types (spec 7.1.7).
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

# Set Peer Bandwidth limit types (spec 5.4.5).
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2


def _u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError(f"{what} message too short")
    return int.from_bytes(payload[:4], "big")


def _control(type_id: int, value: int) -> RawMessage:
    """A protocol control message carrying one u32 (spec 5.4: chunk stream
    2, message stream 0)."""
    return RawMessage(type_id, 0, 0, value.to_bytes(4, "big"), CSID_PROTOCOL)


@dataclass(frozen=True, slots=True)
class SetChunkSize:
    size: int

    def to_raw(self) -> RawMessage:
        return _control(SET_CHUNK_SIZE, self.size)


@dataclass(frozen=True, slots=True)
class Abort:
    csid: int

    def to_raw(self) -> RawMessage:
        return _control(ABORT, self.csid)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    sequence_number: int  # total bytes received so far (mod 2^32)

    def to_raw(self) -> RawMessage:
        return _control(ACKNOWLEDGEMENT, self.sequence_number & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class WindowAckSize:
    size: int

    def to_raw(self) -> RawMessage:
        return _control(WINDOW_ACK_SIZE, self.size)


@dataclass(frozen=True, slots=True)
class SetPeerBandwidth:
    size: int
    limit_type: int = LIMIT_DYNAMIC

    def to_raw(self) -> RawMessage:
        return RawMessage(
            SET_PEER_BANDWIDTH, 0, 0,
            self.size.to_bytes(4, "big") + bytes((self.limit_type,)), CSID_PROTOCOL,
        )


@dataclass(frozen=True, slots=True)
class UserControl:
    event: int
    data: bytes = b""

    @classmethod
    def stream_begin(cls, msid: int) -> "UserControl":
        return cls(UC_STREAM_BEGIN, msid.to_bytes(4, "big"))

    @classmethod
    def ping_response(cls, value: int) -> "UserControl":
        return cls(UC_PING_RESPONSE, value.to_bytes(4, "big"))

    @property
    def value(self) -> int:
        """The first u32 argument (msid or ping time), 0 if absent."""
        return int.from_bytes(self.data[:4], "big") if len(self.data) >= 4 else 0

    def to_raw(self) -> RawMessage:
        return RawMessage(
            USER_CONTROL, 0, 0, self.event.to_bytes(2, "big") + self.data, CSID_PROTOCOL
        )


@dataclass(slots=True)
class Command:
    """An AMF0 (or AMF3-wrapped) command: name, transaction id, command
    object, then arguments (spec 7.1.1, 7.2)."""

    name: str
    transaction_id: float
    command_object: object = None
    args: list = field(default_factory=list)
    msid: int = 0
    csid: int = CSID_COMMAND

    def to_raw(self) -> RawMessage:
        payload = amf0.encode(self.name, self.transaction_id, self.command_object, *self.args)
        return RawMessage(COMMAND_AMF0, 0, self.msid, payload, self.csid)


@dataclass(slots=True)
class DataMessage:
    """A data message (type 18/15): a handler name and values, e.g.
    `@setDataFrame`, `onMetaData`, {…}. `error` is set when decoding stopped
    early; the values decoded before it are kept."""

    values: list
    timestamp: int = 0
    msid: int = 0
    error: str | None = None

    def to_raw(self, csid: int = 4) -> RawMessage:
        return RawMessage(DATA_AMF0, self.timestamp, self.msid, amf0.encode(*self.values), csid)


@dataclass(frozen=True, slots=True)
class Media:
    """An audio (8) or video (9) message: an FLV tag body."""

    type_id: int
    timestamp: int  # u32 ms as sent
    msid: int
    payload: bytes

    def to_raw(self, csid: int | None = None) -> RawMessage:
        if csid is None:
            csid = 6 if self.type_id == VIDEO else 4
        return RawMessage(self.type_id, self.timestamp, self.msid, self.payload, csid)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message type we do not act on (shared objects, ...)."""

    raw: RawMessage


Message = (
    SetChunkSize | Abort | Acknowledgement | WindowAckSize | SetPeerBandwidth | UserControl
    | Command | DataMessage | Media | Unknown
)


def decode(
    raw: RawMessage,
    *,
    max_depth: int = amf0.DEFAULT_MAX_DEPTH,
    max_items: int = amf0.DEFAULT_MAX_ITEMS,
) -> Message:
    """Interpret one raw message. Raises RemoteProtocolError for malformed
    control or command messages; data messages never raise."""
    t = raw.type_id
    p = raw.payload
    if t == SET_CHUNK_SIZE:
        return SetChunkSize(_u32(p, "Set Chunk Size"))
    if t == ABORT:
        return Abort(_u32(p, "Abort"))
    if t == ACKNOWLEDGEMENT:
        return Acknowledgement(_u32(p, "Acknowledgement"))
    if t == WINDOW_ACK_SIZE:
        return WindowAckSize(_u32(p, "Window Acknowledgement Size"))
    if t == SET_PEER_BANDWIDTH:
        if len(p) < 5:
            raise RemoteProtocolError("Set Peer Bandwidth message too short")
        return SetPeerBandwidth(int.from_bytes(p[:4], "big"), p[4])
    if t == USER_CONTROL:
        if len(p) < 2:
            raise RemoteProtocolError("User Control message too short")
        return UserControl(int.from_bytes(p[:2], "big"), bytes(p[2:]))
    if t in (AUDIO, VIDEO):
        return Media(t, raw.timestamp, raw.msid, p)
    if t in (COMMAND_AMF0, COMMAND_AMF3):
        body = p[1:] if t == COMMAND_AMF3 else p  # AMF3 commands lead with 0x00
        values = amf0.decode_all(body, max_depth=max_depth, max_items=max_items)
        if len(values) < 2 or not isinstance(values[0], str):
            raise RemoteProtocolError("command message without a name and transaction id")
        txn = values[1]
        if not isinstance(txn, (int, float)) or isinstance(txn, bool):
            txn = 0.0
        obj = values[2] if len(values) > 2 else None
        return Command(values[0], float(txn), obj, values[3:], raw.msid, raw.csid)
    if t in (DATA_AMF0, DATA_AMF3):
        body = p
        if t == DATA_AMF3 and body[:1] == b"\x00":
            body = body[1:]
        values, err = amf0.decode_tolerant(body, max_depth=max_depth, max_items=max_items)
        return DataMessage(values, raw.timestamp, raw.msid, str(err) if err else None)
    return Unknown(raw)


def split_aggregate(
    raw: RawMessage,
    *,
    max_depth: int = amf0.DEFAULT_MAX_DEPTH,
    max_items: int = amf0.DEFAULT_MAX_ITEMS,
) -> list[Media | DataMessage]:
    """Split an aggregate message (type 22, spec 7.1.6): FLV-style tags, each
    11-byte header + body + 4-byte back pointer. Sub-message times are
    rebased on the aggregate's own timestamp. Data sub-messages get the same
    AMF limits as a data message of their own."""
    out: list[Media | DataMessage] = []
    p = raw.payload
    pos = 0
    first_ts: int | None = None
    while pos + 11 <= len(p):
        tag_type = p[pos]
        size = int.from_bytes(p[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(p[pos + 4 : pos + 7], "big") | (p[pos + 7] << 24)
        body_start = pos + 11
        body_end = body_start + size
        if body_end > len(p):
            raise RemoteProtocolError("aggregate sub-message truncated")
        if first_ts is None:
            first_ts = ts
        when = (raw.timestamp + ts - first_ts) & 0xFFFFFFFF
        body = p[body_start:body_end]
        if tag_type in (AUDIO, VIDEO):
            out.append(Media(tag_type, when, raw.msid, body))
        elif tag_type == DATA_AMF0:
            values, err = amf0.decode_tolerant(body, max_depth=max_depth, max_items=max_items)
            out.append(DataMessage(values, when, raw.msid, str(err) if err else None))
        pos = body_end + 4  # back pointer
    return out
