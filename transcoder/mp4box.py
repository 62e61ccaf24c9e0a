"""ISO BMFF box writer helpers (ISO/IEC 14496-12 §4.2: Box and FullBox).

A box is u32 size + 4-char type + payload; a FullBox adds u8 version and u24
flags. Children are built first, so every size is known when the parent is
written (no patching except trun.data_offset, see fmp4.py).
"""
from __future__ import annotations

import struct

_MAX_BOX = 0xFFFFFFFF  # 32-bit size; our boxes are far smaller (largesize unused)


def box(kind: bytes, *payload: bytes) -> bytes:
    """A plain Box: size, type, concatenated payload."""
    body = b"".join(payload)
    size = 8 + len(body)
    if len(kind) != 4:
        raise ValueError(f"box type must be 4 bytes: {kind!r}")
    if size > _MAX_BOX:
        raise ValueError("box too large for a 32-bit size")
    return struct.pack(">I4s", size, kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: version (u8) and flags (u24) before the payload."""
    return box(kind, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *payload)


# Big-endian fixed-size fields (14496-12 §4.2 writes every integer big-endian).
u8 = struct.Struct(">B").pack
u16 = struct.Struct(">H").pack
i16 = struct.Struct(">h").pack
u32 = struct.Struct(">I").pack
i32 = struct.Struct(">i").pack
u64 = struct.Struct(">Q").pack


def iter_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, payload_start, box_end) for the boxes in data[start:end].

    A small reader for tests and for sanity checks; it stops at a truncated
    box instead of raising, since callers only inspect what we wrote.
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size
