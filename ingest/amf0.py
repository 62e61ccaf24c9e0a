"""AMF0 encoder and decoder (Adobe "Action Message Format -- AMF 0", 2007).

Every marker an RTMP encoder sends is decoded (spec section 2.2 to 2.18):
number, boolean, string, object, null, undefined, reference, ECMA array,
object end, strict array, date, long string, XML document, typed object, and
the "switch to AMF3" marker for the simple AMF3 scalars (AMF3 spec 3.2 to 3.8).
Decoding is bounded: nesting depth and the total number of values in one
message are limited, and counts declared in the data (ECMA array hint, strict
array count, string lengths) are never used to preallocate anything.
"""
from __future__ import annotations

import datetime as _dt
import math
import struct
from dataclasses import dataclass, field

from .errors import RemoteProtocolError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04  # reserved, never sent
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E  # reserved, never sent
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11  # the next value is AMF3

# Defaults of the decoder limits. Real connect objects and onMetaData arrays
# have 10 to 40 entries nested at most 3 deep (E-RTMP videoFourCcInfoMap);
# these bounds are generous for that and stop a hostile message from building
# deep recursion or millions of tiny Python objects.
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_ITEMS = 4096


class AMF0DecodeError(RemoteProtocolError):
    """The bytes are not valid AMF0 (or break a decoder limit)."""


class _UndefinedType:
    _instance: "_UndefinedType | None" = None

    def __new__(cls) -> "_UndefinedType":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False


Undefined = _UndefinedType()
"""The AMF0 `undefined` value (distinct from `null`, which is None)."""


class ECMAArray(dict):
    """An associative array (marker 0x08); a plain dict encodes as an object."""


@dataclass
class TypedObject:
    """An object with a class name (marker 0x10)."""

    class_name: str
    members: dict = field(default_factory=dict)


# ---------------------------------------------------------------- decoding


class Decoder:
    """Decodes the values of one AMF0 body, in order."""

    def __init__(
        self,
        data: bytes,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        self._data = memoryview(data)
        self.pos = 0
        self._max_depth = max_depth
        self._items_left = max_items
        # Objects, ECMA arrays, strict arrays and typed objects in the order
        # they began, for reference markers (spec 2.9).
        self._refs: list = []
        self._amf3_strings: list[str] = []

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self._data)

    def _take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self._data):
            raise AMF0DecodeError(f"AMF0 value truncated at offset {self.pos}")
        chunk = self._data[self.pos : end]
        self.pos = end
        return chunk

    def _u8(self) -> int:
        return self._take(1)[0]

    def _u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def _u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def _double(self) -> float:
        return struct.unpack(">d", self._take(8))[0]

    def _utf8(self, n: int) -> str:
        # Encoders have sent Latin-1 in metadata; never fail on text.
        return bytes(self._take(n)).decode("utf-8", errors="replace")

    def _count(self) -> None:
        self._items_left -= 1
        if self._items_left < 0:
            raise AMF0DecodeError("AMF0 message has too many values")

    def read_value(self, depth: int = 0):
        if depth > self._max_depth:
            raise AMF0DecodeError("AMF0 values nested too deep")
        self._count()
        marker = self._u8()
        if marker == NUMBER:
            return self._double()
        if marker == BOOLEAN:
            return self._u8() != 0
        if marker == STRING:
            return self._utf8(self._u16())
        if marker == LONG_STRING or marker == XML_DOCUMENT:
            return self._utf8(self._u32())
        if marker == NULL:
            return None
        if marker in (UNDEFINED, UNSUPPORTED):
            return Undefined
        if marker == OBJECT:
            obj: dict = {}
            self._refs.append(obj)
            self._read_members(obj, depth)
            return obj
        if marker == ECMA_ARRAY:
            self._u32()  # count hint: encoders get it wrong, do not trust it
            arr = ECMAArray()
            self._refs.append(arr)
            self._read_members(arr, depth)
            return arr
        if marker == TYPED_OBJECT:
            typed = TypedObject(self._utf8(self._u16()))
            self._refs.append(typed)
            self._read_members(typed.members, depth)
            return typed
        if marker == STRICT_ARRAY:
            count = self._u32()
            items: list = []
            self._refs.append(items)
            for _ in range(count):  # each value consumes input or fails: bounded
                items.append(self.read_value(depth + 1))
            return items
        if marker == DATE:
            ms = self._double()
            self._take(2)  # time zone: "reserved, should be 0" (spec 2.13)
            return _date_from_ms(ms)
        if marker == REFERENCE:
            index = self._u16()
            # Reference-tolerant: a dangling index is not worth a dropped publish.
            return self._refs[index] if index < len(self._refs) else None
        if marker == AVMPLUS:
            return self._read_amf3(depth)
        if marker == OBJECT_END:
            raise AMF0DecodeError("AMF0 object-end marker outside an object")
        raise AMF0DecodeError(f"unsupported AMF0 marker 0x{marker:02x}")

    def _read_members(self, target: dict, depth: int) -> None:
        while True:
            key = self._utf8(self._u16())
            if key == "" and self._data[self.pos : self.pos + 1] == b"\x09":
                self.pos += 1
                return
            target[key] = self.read_value(depth + 1)

    # AMF3 (only the scalars; the rest is refused, which callers of data
    # messages tolerate).
    def _amf3_u29(self) -> int:
        value = 0
        for i in range(4):
            b = self._u8()
            if i == 3:
                return (value << 8) | b
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value
        return value  # pragma: no cover

    def _read_amf3(self, depth: int):
        marker = self._u8()
        if marker == 0x00:
            return Undefined
        if marker == 0x01:
            return None
        if marker == 0x02:
            return False
        if marker == 0x03:
            return True
        if marker == 0x04:
            v = self._amf3_u29()
            return v - (1 << 29) if v & (1 << 28) else v
        if marker == 0x05:
            return self._double()
        if marker == 0x06:
            ref = self._amf3_u29()
            if not ref & 1:
                idx = ref >> 1
                if idx >= len(self._amf3_strings):
                    raise AMF0DecodeError("AMF3 string reference out of range")
                return self._amf3_strings[idx]
            s = self._utf8(ref >> 1)
            if s:
                self._amf3_strings.append(s)
            return s
        raise AMF0DecodeError(f"unsupported AMF3 marker 0x{marker:02x}")


def _date_from_ms(ms: float):
    if not math.isfinite(ms):
        return Undefined
    try:
        return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return Undefined


def decode_all(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS
) -> list:
    """Decode every value of an AMF0 body; raise AMF0DecodeError on bad data."""
    dec = Decoder(data, max_depth=max_depth, max_items=max_items)
    values = []
    while not dec.at_end:
        values.append(dec.read_value())
    return values


def decode_tolerant(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS
) -> tuple[list, AMF0DecodeError | None]:
    """Decode as many whole values as possible, for data messages (metadata)
    where a garbled field must not end the publish. Returns the values and
    the error that stopped decoding, if any."""
    dec = Decoder(data, max_depth=max_depth, max_items=max_items)
    values: list = []
    while not dec.at_end:
        try:
            values.append(dec.read_value())
        except AMF0DecodeError as exc:
            return values, exc
    return values, None


# ---------------------------------------------------------------- encoding


def _enc_str_body(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 member name longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _enc_members(out: bytearray, members: dict) -> None:
    for key, value in members.items():
        out += _enc_str_body(str(key))
        _encode_into(out, value)
    out += b"\x00\x00\x09"


def _encode_into(out: bytearray, value) -> None:
    if value is None:
        out.append(NULL)
    elif value is Undefined:
        out.append(UNDEFINED)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += len(raw).to_bytes(2, "big")
        else:
            out.append(LONG_STRING)
            out += len(raw).to_bytes(4, "big")
        out += raw
    elif isinstance(value, ECMAArray):
        out.append(ECMA_ARRAY)
        out += len(value).to_bytes(4, "big")
        _enc_members(out, value)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _enc_members(out, value)
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        out += _enc_str_body(value.class_name)
        _enc_members(out, value.members)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += len(value).to_bytes(4, "big")
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, _dt.datetime):
        out.append(DATE)
        out += struct.pack(">d", value.timestamp() * 1000.0)
        out += b"\x00\x00"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values) -> bytes:
    """Encode values one after the other, as in a command or data message."""
    out = bytearray()
    for v in values:
        _encode_into(out, v)
    return bytes(out)
