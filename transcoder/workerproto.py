"""The pipe protocol between the server and a transcode worker process.

Both directions carry the same framing over the worker's stdin/stdout:

    u32 length (big-endian, of everything after it)
    u8  type          (T_* below)
    u8  track         (input: TRACK_VIDEO/TRACK_AUDIO; output: rendition index
                       or TRACK_AUDIO for transcoded audio)
    u8  flags         (F_KEYFRAME)
    i64 dts, i64 pts  (milliseconds, the ingest's timescale; 0 when unused)
    u64 seq           (server-assigned sequence number of an input message;
                       echoed by the worker in T_DONE)
    payload           (media bytes, a codec record, or UTF-8 JSON)

Sans-I/O: `encode()` returns bytes to write; `MessageReader.receive_data()`
takes whatever the pipe gave and `next_message()` returns a `Message` or
`NEED_DATA`. A length above `max_message_bytes` is a `ProtocolError`: the
peer is broken (or hostile) and the pipe is closed.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

# Server -> worker
T_SETUP = 1  # JSON: encoder settings and the rendition list (first message)
T_CONFIG = 2  # JSON: a source CodecConfig (record hex-encoded)
T_FRAME = 3  # one source access unit / audio frame
T_FLUSH = 4  # end of a publish session: drain the encoders, then T_DONE
T_DISABLE = 5  # stop encoding rendition `track` (degradation under load)
# Worker -> server
T_OUT_CONFIG = 16  # JSON: an output CodecConfig (avcC / ASC hex-encoded, size)
T_OUT_FRAME = 17  # one encoded access unit of rendition `track`
T_DONE = 18  # every output caused by input message `seq` has been written
T_ERROR = 19  # JSON: {"message": ...}; the worker exits after it

TRACK_VIDEO = 0
TRACK_AUDIO = 255

F_KEYFRAME = 0x01

_HEADER = struct.Struct(">IBBBqqQ")
HEADER_SIZE = _HEADER.size  # 4 + 1 + 1 + 1 + 8 + 8 + 8 = 31 bytes
# A 1080p intra frame at a high bitrate is well under 2 MiB; the RTMP ingest
# already refuses messages above 8 MiB, so 16 MiB is never a real frame.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A JSON control message is small; a large one is a bug or an attack.
MAX_JSON_BYTES = 64 * 1024

NEED_DATA = object()


class ProtocolError(Exception):
    """The peer sent something that is not this protocol."""


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    track: int = 0
    flags: int = 0
    dts: int = 0
    pts: int = 0
    seq: int = 0
    payload: bytes = b""

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & F_KEYFRAME)

    def json(self) -> dict:
        if len(self.payload) > MAX_JSON_BYTES:
            raise ProtocolError(f"JSON message of {len(self.payload)} bytes")
        try:
            value = json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"bad JSON in message type {self.type}: {exc}") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"JSON message type {self.type} is not an object")
        return value


def encode(msg: Message) -> bytes:
    length = HEADER_SIZE - 4 + len(msg.payload)
    return _HEADER.pack(length, msg.type, msg.track, msg.flags, msg.dts, msg.pts, msg.seq) + msg.payload


def json_message(type_: int, value: dict, *, track: int = 0, seq: int = 0) -> Message:
    return Message(type_, track=track, seq=seq, payload=json.dumps(value, separators=(",", ":")).encode())


def config_payload(codec: str, record: bytes, width: int = 0, height: int = 0,
                   sample_rate: int = 0, channels: int = 0) -> dict:
    return {"codec": codec, "record": record.hex(), "width": width, "height": height,
            "sample_rate": sample_rate, "channels": channels}


def parse_config_payload(value: dict) -> tuple[str, bytes, int, int, int, int]:
    try:
        return (str(value["codec"]), bytes.fromhex(value["record"]), int(value.get("width", 0)),
                int(value.get("height", 0)), int(value.get("sample_rate", 0)), int(value.get("channels", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad config message: {exc!r}") from None


class MessageReader:
    """Incremental decoder of the framing above; feed it any split of bytes."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            # Compact lazily so a burst of small messages costs one move, not one each.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_message(self) -> Message | object:
        avail = len(self._buf) - self._pos
        if avail < 4:
            return NEED_DATA
        (length,) = struct.unpack_from(">I", self._buf, self._pos)
        if length < HEADER_SIZE - 4:
            raise ProtocolError(f"message length {length} shorter than the header")
        if length + 4 > self.max_message_bytes:
            raise ProtocolError(f"message of {length + 4} bytes exceeds {self.max_message_bytes}")
        if avail < 4 + length:
            return NEED_DATA
        _, type_, track, flags, dts, pts, seq = _HEADER.unpack_from(self._buf, self._pos)
        start = self._pos + HEADER_SIZE
        end = self._pos + 4 + length
        payload = bytes(self._buf[start:end])
        self._pos = end
        return Message(type_, track, flags, dts, pts, seq, payload)

    def messages(self):
        """All complete messages buffered so far."""
        while (msg := self.next_message()) is not NEED_DATA:
            yield msg
