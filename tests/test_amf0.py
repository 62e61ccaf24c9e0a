"""AMF0 codec (ingest/amf0.py) and the AMF3-wrapped messages (types 15/17)."""
from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import amf0
from ingest import messages as m
from ingest.amf0 import ECMAArray, TypedObject, Undefined
from ingest.chunk import RawMessage


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


EPOCH_2024 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

# (name, value, exact AMF0 bytes, encoder produces exactly these bytes)
TABLE = [
    ("number", 1.5, num(1.5), True),
    ("number zero", 0.0, num(0.0), True),
    ("boolean true", True, h("01 01"), True),
    ("boolean false", False, h("01 00"), True),
    ("boolean non-zero byte is true", True, h("01 07"), False),
    ("string", "live", h("02 0004") + b"live", True),
    ("empty string", "", h("02 0000"), True),
    ("utf-8 string", "é", h("02 0002 c3a9"), True),
    ("null", None, h("05"), True),
    ("undefined", Undefined, h("06"), True),
    ("unsupported decodes as undefined", Undefined, h("0d"), False),
    ("object", {"app": "live", "n": 2.0},
     h("03 0003") + b"app" + h("02 0004") + b"live" + h("0001") + b"n" + num(2.0) + h("000009"), True),
    ("empty object", {}, h("03 000009"), True),
    ("nested object", {"a": {"b": None}},
     h("03 0001") + b"a" + h("03 0001") + b"b" + h("05 000009 000009"), True),
    ("ECMA array", ECMAArray(width=320.0),
     h("08 00000001 0005") + b"width" + num(320.0) + h("000009"), True),
    ("ECMA array with a wrong count hint", ECMAArray(a=True),
     h("08 00000063 0001") + b"a" + h("0101 000009"), False),
    ("strict array (E-RTMP fourCcList)", ["hvc1", "av01"],
     h("0a 00000002 02 0004") + b"hvc1" + h("02 0004") + b"av01", True),
    ("empty strict array", [], h("0a 00000000"), True),
    ("date", EPOCH_2024, h("0b") + struct.pack(">d", EPOCH_2024.timestamp() * 1000) + h("0000"), True),
    ("long string", "x" * 70000, h("0c 00011170") + b"x" * 70000, True),
    ("short long string", "abc", h("0c 00000003") + b"abc", False),
    ("XML document", "<a/>", h("0f 00000004") + b"<a/>", False),
    ("typed object", TypedObject("flex.Foo", {"k": 1.0}),
     h("10 0008") + b"flex.Foo" + h("0001") + b"k" + num(1.0) + h("000009"), True),
    ("AMF3 integer via avmplus marker", 5, h("11 04 05"), False),
    ("AMF3 negative integer", -1, h("11 04 ff ff ff ff"), False),
    ("AMF3 string via avmplus marker", "hi", h("11 06 05") + b"hi", False),
    ("AMF3 true", True, h("11 03"), False),
]


@pytest.mark.parametrize("name,value,data,exact", TABLE, ids=[t[0] for t in TABLE])
def test_decode_table(name, value, data, exact):
    assert amf0.decode_all(data) == [value]


@pytest.mark.parametrize("name,value,data,exact", [t for t in TABLE if t[3]],
                         ids=[t[0] for t in TABLE if t[3]])
def test_encode_table(name, value, data, exact):
    assert amf0.encode(value) == data


def test_reference_resolves_to_earlier_object_and_dangling_is_tolerated():
    data = h("03 0001") + b"a" + h("0101 000009") + h("07 0000") + h("07 0009")
    first, ref, dangling = amf0.decode_all(data)
    assert ref is first and first == {"a": True}
    assert dangling is None


def test_ecma_array_and_object_are_interchangeable_for_connect():
    cmd = m.decode(RawMessage(20, 0, 0, amf0.encode("connect", 1.0, ECMAArray(app="live")), 3))
    assert cmd.command_object == {"app": "live"}


@pytest.mark.parametrize("data,match", [
    (h("02 0005") + b"ab", "truncated"),
    (h("03 0001") + b"a", "truncated"),
    (h("09"), "object-end"),
    (h("04"), "marker 0x04"),
    (h("12"), "marker 0x12"),
    (h("11 0a"), "AMF3 marker"),
])
def test_decode_errors(data, match):
    with pytest.raises(amf0.AMF0DecodeError, match=match):
        amf0.decode_all(data)


def test_depth_limit():
    deep = b""
    for _ in range(20):
        deep = h("0a 00000001") + deep if deep else h("0a 00000000")
    with pytest.raises(amf0.AMF0DecodeError, match="deep"):
        amf0.decode_all(deep, max_depth=16)
    assert amf0.decode_all(deep, max_depth=32)


def test_item_count_limit_and_huge_declared_count():
    many = h("0a 00000064") + h("05") * 100
    assert len(amf0.decode_all(many)[0]) == 100
    with pytest.raises(amf0.AMF0DecodeError, match="too many"):
        amf0.decode_all(many, max_items=50)
    # A declared count of 4 billion with no data behind it allocates nothing.
    with pytest.raises(amf0.AMF0DecodeError, match="truncated"):
        amf0.decode_all(h("0a ffffffff 05"))


def test_tolerant_decoding_keeps_the_good_values():
    data = amf0.encode("onMetaData", ECMAArray(width=1.0)) + h("04 deadbeef")
    values, err = amf0.decode_tolerant(data)
    assert values == ["onMetaData", {"width": 1.0}]
    assert err is not None


def test_amf3_wrapped_command_type_17():
    body = amf0.encode("connect", 1.0, {"app": "live"})
    cmd = m.decode(RawMessage(m.COMMAND_AMF3, 0, 0, b"\x00" + body, 3))
    assert isinstance(cmd, m.Command)
    assert (cmd.name, cmd.transaction_id, cmd.command_object) == ("connect", 1.0, {"app": "live"})


@pytest.mark.parametrize("prefix", [b"\x00", b""])
def test_amf3_data_type_15(prefix):
    body = amf0.encode("@setDataFrame", "onMetaData", ECMAArray(width=640.0))
    msg = m.decode(RawMessage(m.DATA_AMF3, 0, 1, prefix + body, 4))
    assert isinstance(msg, m.DataMessage)
    assert msg.values == ["@setDataFrame", "onMetaData", {"width": 640.0}]


def test_garbled_data_message_never_raises():
    msg = m.decode(RawMessage(m.DATA_AMF0, 0, 1, amf0.encode("onMetaData") + h("08 00000001 0003") + b"abc", 4))
    assert msg.values == ["onMetaData"]
    assert msg.error


json_like = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_roundtrip(value):
    assert amf0.decode_all(amf0.encode(value)) == [value]


@settings(max_examples=500, deadline=1000)
@given(st.binary(max_size=500))
def test_arbitrary_bytes_decode_or_amf0_error(data):
    try:
        amf0.decode_all(data, max_items=256)
    except amf0.AMF0DecodeError:
        pass
    values, err = amf0.decode_tolerant(data, max_items=256)
    assert isinstance(values, list)
