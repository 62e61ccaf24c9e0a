"""RTMP chunk stream (RTMP 1.0 spec section 5.3): demultiplexer and multiplexer.

`ChunkReader` turns the bytes after the handshake into whole messages
(`RawMessage`), reassembled per chunk stream id; `ChunkWriter` does the
reverse. Both are sans-I/O.

Reader rules (what real encoders send, and what a hostile peer must not get
away with):

* basic headers of 1, 2 and 3 bytes (csid 2..65599), message headers fmt 0..3;
* extended timestamps on fmt 0/1/2 and on the fmt-3 chunks that follow them
  (spec 5.3.1.3). Old librtmp and FFmpeg omit the field on fmt-3
  continuation chunks: the 4 bytes are peeked and consumed only when they
  equal the expected value (as SRS does);
* a fmt-3 chunk that starts a new message reuses the previous delta; after a
  fmt-0 header that delta is the fmt-0 timestamp (spec 5.3.1.2.4);
* Set Chunk Size (type 1) and Abort (type 2) are applied by the reader itself
  before the next chunk is parsed; a chunk size of 0 or above 16 MiB
  (2^24, as no message can be larger) is a protocol error;
* protocol errors: the first chunk of a chunk stream is not fmt 0; a fmt
  0/1/2 header arrives while a message on that chunk stream is incomplete; a
  message longer than `max_message_size`; more than `max_chunk_streams` chunk
  streams; more than `max_buffered_bytes` in incomplete messages.
* payload bytes are copied into a message buffer only as they arrive; a
  declared length never allocates anything.

Timestamps are the 32-bit RTMP values; unwrapping to 64 bits is the media
parser's job.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 128  # spec 5.4.1: both directions start at 128
MAX_PEER_CHUNK_SIZE = 1 << 24  # a message length is 24 bits: larger is useless
EXTENDED = 0xFFFFFF
_U32 = 0xFFFFFFFF

TYPE_SET_CHUNK_SIZE = 1
TYPE_ABORT = 2


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One RTMP message, before its payload is interpreted."""

    type_id: int
    timestamp: int  # u32 ms, as sent
    msid: int  # message stream id
    payload: bytes
    csid: int = 3  # chunk stream it travelled on (not part of the message)


class _ChunkStream:
    __slots__ = ("timestamp", "delta", "length", "type_id", "msid", "ext", "ext_value", "buf")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.msid = 0
        self.ext = False  # last fmt 0/1/2 header used the extended field
        self.ext_value = 0  # and this is what it carried
        self.buf: bytearray | None = None  # incomplete message payload


class ChunkReader:
    """Sans-I/O chunk demultiplexer: `receive_data()`, then `next_message()`
    until it returns NEED_DATA."""

    def __init__(
        self,
        *,
        max_message_size: int = 8 << 20,
        max_chunk_streams: int = 64,
        max_buffered_bytes: int = 16 << 20,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_buffered_bytes = max_buffered_bytes
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0  # total fed, for acknowledgements
        self._buf = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._cur: _ChunkStream | None = None  # whose chunk payload we are in
        self._cur_csid = 0
        self._cur_left = 0  # payload bytes left in the current chunk
        self._buffered = 0  # bytes held in incomplete messages
        self._warned_fmt3_after_fmt0 = False
        self._warned_ext_omitted = False
        self.failed = False

    @property
    def pending_bytes(self) -> int:
        """Input bytes not yet parsed (at most one chunk header's worth when
        the caller drains next_message() after each receive_data())."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        self.bytes_received += len(data)

    def next_message(self) -> RawMessage | _NeedData:
        if self.failed:
            raise LocalProtocolError("chunk reader already failed")
        try:
            return self._next()
        except RemoteProtocolError:
            self.failed = True
            raise

    def _next(self) -> RawMessage | _NeedData:
        while True:
            st = self._cur
            if st is not None:
                avail = len(self._buf) - self._pos
                if avail == 0:
                    return NEED_DATA
                n = min(avail, self._cur_left)
                assert st.buf is not None
                st.buf += self._buf[self._pos : self._pos + n]
                self._pos += n
                self._cur_left -= n
                self._buffered += n
                if self._buffered > self.max_buffered_bytes:
                    raise RemoteProtocolError("too many bytes in incomplete RTMP messages")
                if self._cur_left:
                    return NEED_DATA
                self._cur = None
                if len(st.buf) == st.length:
                    return self._complete(st, self._cur_csid)
                continue
            if not self._parse_header():
                return NEED_DATA
            st = self._cur
            if st is not None and st.length == 0:
                # A zero-length message has no chunk payload at all.
                self._cur = None
                return self._complete(st, self._cur_csid)

    def _complete(self, st: _ChunkStream, csid: int) -> RawMessage:
        assert st.buf is not None
        payload = bytes(st.buf)
        self._buffered -= len(st.buf)
        st.buf = None
        msg = RawMessage(st.type_id, st.timestamp, st.msid, payload, csid)
        if msg.type_id == TYPE_SET_CHUNK_SIZE:
            self._apply_chunk_size(payload)
        elif msg.type_id == TYPE_ABORT and len(payload) >= 4:
            self._abort(int.from_bytes(payload[:4], "big"))
        return msg

    def _apply_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RemoteProtocolError("Set Chunk Size message too short")
        size = int.from_bytes(payload[:4], "big")
        if size & 0x80000000 or size == 0 or size > MAX_PEER_CHUNK_SIZE:
            raise RemoteProtocolError(f"invalid chunk size {size}")
        self.chunk_size = size

    def _abort(self, csid: int) -> None:
        st = self._streams.get(csid)
        if st is not None and st.buf is not None:
            self._buffered -= len(st.buf)
            st.buf = None

    def _parse_header(self) -> bool:
        """Parse one chunk header if it is all there; commit or leave the
        input untouched (tentative read)."""
        b = self._buf
        p = self._pos
        end = len(b)
        if p >= end:
            return False
        b0 = b[p]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p += 1
        if csid == 0:
            if p + 1 > end:
                return False
            csid = b[p] + 64
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return False
            csid = b[p] + b[p + 1] * 256 + 64
            p += 2
        hlen = (11, 7, 3, 0)[fmt]
        if p + hlen > end:
            return False
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise RemoteProtocolError(
                    f"first chunk on chunk stream {csid} has fmt {fmt}, not 0"
                )
            if len(self._streams) >= self.max_chunk_streams:
                raise RemoteProtocolError(
                    f"more than {self.max_chunk_streams} chunk streams on one connection"
                )
        in_progress = st is not None and st.buf is not None
        if fmt != 3 and in_progress:
            raise RemoteProtocolError(
                f"fmt {fmt} header on chunk stream {csid} in the middle of a message"
            )
        field = length = type_id = msid = 0
        if fmt <= 2:
            field = int.from_bytes(b[p : p + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(b[p + 3 : p + 6], "big")
            type_id = b[p + 6]
        if fmt == 0:
            msid = int.from_bytes(b[p + 7 : p + 11], "little")
        p += hlen
        ext_value = 0
        if fmt <= 2:
            ext = field == EXTENDED
            if ext:
                if p + 4 > end:
                    return False
                ext_value = int.from_bytes(b[p : p + 4], "big")
                p += 4
        else:
            assert st is not None
            ext = st.ext
            if ext:
                if p + 4 > end:
                    return False
                peek = int.from_bytes(b[p : p + 4], "big")
                if in_progress:
                    expected = (st.ext_value, st.timestamp)
                else:
                    expected = (st.ext_value, (st.timestamp + st.delta) & _U32)
                if peek in expected:
                    p += 4
                elif not self._warned_ext_omitted:
                    # librtmp and old FFmpeg leave the extended timestamp out
                    # of fmt-3 chunks; those 4 bytes are payload.
                    self._warned_ext_omitted = True
                    log.info("peer omits extended timestamps on fmt-3 chunks (librtmp style)")
        # Commit.
        if st is None:
            st = _ChunkStream()
            self._streams[csid] = st
        if fmt == 0:
            ts = ext_value if ext else field
            st.timestamp = ts
            st.delta = ts  # spec 5.3.1.2.4: a following fmt 3 repeats this
            st.length = length
            st.type_id = type_id
            st.msid = msid
        elif fmt <= 2:
            delta = ext_value if ext else field
            st.delta = delta
            st.timestamp = (st.timestamp + delta) & _U32
            if fmt == 1:
                st.length = length
                st.type_id = type_id
        elif not in_progress:
            if not self._warned_fmt3_after_fmt0 and st.delta and st.delta == st.timestamp:
                self._warned_fmt3_after_fmt0 = True
                log.info("fmt-3 new message after a non-zero fmt-0 timestamp: using the spec's delta")
            st.timestamp = (st.timestamp + st.delta) & _U32
        if fmt <= 2:
            st.ext = ext
            st.ext_value = ext_value
        if not in_progress:
            if st.length > self.max_message_size:
                raise RemoteProtocolError(
                    f"message of {st.length} bytes exceeds the limit of {self.max_message_size}"
                )
            st.buf = bytearray()
        assert st.buf is not None
        self._pos = p
        self._cur = st
        self._cur_csid = csid
        self._cur_left = min(self.chunk_size, st.length - len(st.buf))
        return True


def basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        v = csid - 64
        return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
    raise LocalProtocolError(f"chunk stream id {csid} out of range")


class _OutState:
    __slots__ = ("timestamp", "length", "type_id", "msid")

    def __init__(self, timestamp: int, length: int, type_id: int, msid: int) -> None:
        self.timestamp = timestamp
        self.length = length
        self.type_id = type_id
        self.msid = msid


class ChunkWriter:
    """Sans-I/O chunk multiplexer. Uses fmt 0 for the first message of a
    chunk stream (and when time goes back or the msid changes), fmt 1/2
    otherwise, fmt 3 only for continuation chunks, and always writes the
    extended timestamp on fmt-3 chunks when the header used it."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, compress: bool = True) -> None:
        self.chunk_size = chunk_size
        self.compress = compress
        self._streams: dict[int, _OutState] = {}

    def set_chunk_size(self, size: int) -> None:
        if not 1 <= size <= 0x7FFFFFFF:
            raise LocalProtocolError(f"bad chunk size {size}")
        self.chunk_size = size

    def write(self, msg: RawMessage) -> bytes:
        length = len(msg.payload)
        if length > 0xFFFFFF:
            raise LocalProtocolError("message longer than 2^24-1 bytes")
        ts = msg.timestamp & _U32
        prev = self._streams.get(msg.csid)
        if (
            not self.compress
            or prev is None
            or prev.msid != msg.msid
            or ts < prev.timestamp
        ):
            fmt, field = 0, ts
        else:
            field = ts - prev.timestamp
            fmt = 2 if (prev.length == length and prev.type_id == msg.type_id) else 1
        self._streams[msg.csid] = _OutState(ts, length, msg.type_id, msg.msid)
        ext = field >= EXTENDED
        out = bytearray(basic_header(fmt, msg.csid))
        out += (EXTENDED if ext else field).to_bytes(3, "big")
        if fmt <= 1:
            out += length.to_bytes(3, "big")
            out.append(msg.type_id)
        if fmt == 0:
            out += (msg.msid & _U32).to_bytes(4, "little")
        ext_bytes = field.to_bytes(4, "big") if ext else b""
        out += ext_bytes
        payload = msg.payload
        cont = basic_header(3, msg.csid) + ext_bytes
        size = self.chunk_size
        out += payload[:size]
        for off in range(size, length, size):
            out += cont
            out += payload[off : off + size]
        return bytes(out)
