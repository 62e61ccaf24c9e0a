"""RTMP chunk stream reader/writer (ingest/chunk.py, RTMP spec 5.3)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunk import NEED_DATA, ChunkReader, ChunkWriter, RawMessage
from ingest.errors import RemoteProtocolError


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def R(type_id, ts, msid, payload, csid):
    return RawMessage(type_id, ts, msid, payload, csid)


# (name, chunk size, messages, exact bytes, the writer produces exactly these bytes)
TABLE = [
    ("fmt0 command on csid 3", 128,
     [R(20, 0, 0, b"\x02\x00\x01a", 3)],
     h("03 000000 000004 14 00000000") + b"\x02\x00\x01a", True),
    ("message split into fmt3 continuations", 4,
     [R(9, 1000, 1, b"ABCDEFGHIJ", 6)],
     h("06 0003e8 00000a 09 01000000") + b"ABCD" + h("c6") + b"EFGH" + h("c6") + b"IJ", True),
    ("fmt2 then fmt1 headers", 128,
     [R(8, 10, 1, b"aa", 4), R(8, 30, 1, b"bb", 4), R(8, 35, 1, b"ccc", 4)],
     h("04 00000a 000002 08 01000000") + b"aa" + h("84 000014") + b"bb"
     + h("44 000005 000003 08") + b"ccc", True),
    ("extended timestamp on fmt0 and on type-3 continuation", 4,
     [R(9, 0x01000000, 1, b"ABCDEF", 6)],
     h("06 ffffff 000006 09 01000000 01000000") + b"ABCD" + h("c6 01000000") + b"EF", True),
    ("extended delta on fmt2 and its continuation", 4,
     [R(9, 5, 1, b"abcdef", 6), R(9, 5 + 0x01000000, 1, b"ghijkl", 6)],
     h("06 000005 000006 09 01000000") + b"abcd" + h("c6") + b"ef"
     + h("86 ffffff 01000000") + b"ghij" + h("c6 01000000") + b"kl", True),
    ("timestamp exactly 0xFFFFFF is extended", 128,
     [R(9, 0xFFFFFF, 1, b"x", 6)],
     h("06 ffffff 000001 09 01000000 00ffffff") + b"x", True),
    ("2-byte basic header (csid 64)", 128,
     [R(18, 0, 1, b"x", 64)],
     h("00 00 000000 000001 12 01000000") + b"x", True),
    ("2-byte basic header (csid 319)", 128,
     [R(18, 0, 1, b"x", 319)],
     h("00 ff 000000 000001 12 01000000") + b"x", True),
    ("3-byte basic header (csid 400)", 128,
     [R(18, 0, 1, b"x", 400)],
     h("01 50 01 000000 000001 12 01000000") + b"x", True),
    ("zero-length message", 128,
     [R(8, 0, 1, b"", 4)],
     h("04 000000 000000 08 01000000"), True),
    ("time going back forces fmt0", 128,
     [R(8, 100, 1, b"a", 4), R(8, 50, 1, b"b", 4)],
     h("04 000064 000001 08 01000000") + b"a" + h("04 000032 000001 08 01000000") + b"b", True),
    ("interleaved chunk streams", 4,
     [R(8, 0, 1, b"AAAA", 4), R(9, 0, 1, b"VVVVvvvv", 6)],
     h("06 000000 000008 09 01000000") + b"VVVV" + h("04 000000 000004 08 01000000") + b"AAAA"
     + h("c6") + b"vvvv", False),
    ("fmt3 new message after fmt1 reuses the delta", 128,
     [R(8, 0, 1, b"aa", 4), R(8, 10, 1, b"bb", 4), R(8, 20, 1, b"cc", 4)],
     h("04 000000 000002 08 01000000") + b"aa" + h("44 00000a 000002 08") + b"bb" + h("c4") + b"cc",
     False),
    ("fmt3 new message after fmt0: delta is the fmt0 timestamp (spec 5.3.1.2.4)", 128,
     [R(8, 5, 1, b"aa", 4), R(8, 10, 1, b"bb", 4)],
     h("04 000005 000002 08 01000000") + b"aa" + h("c4") + b"bb", False),
    ("fmt3 new message after fmt0 at time 0 (GStreamer's start)", 128,
     [R(8, 0, 1, b"aa", 4), R(8, 0, 1, b"bb", 4)],
     h("04 000000 000002 08 01000000") + b"aa" + h("c4") + b"bb", False),
    ("fmt3 new message repeats an extended delta", 128,
     [R(9, 0x01000000, 1, b"a", 6), R(9, 0x02000000, 1, b"b", 6)],
     h("06 ffffff 000001 09 01000000 01000000") + b"a" + h("c6 01000000") + b"b", False),
    ("Set Chunk Size applies to the next chunk", 128,
     [R(1, 0, 0, h("00000008"), 2), R(20, 0, 0, b"0123456789", 3)],
     h("02 000000 000004 01 00000000 00000008 03 000000 00000a 14 00000000") + b"01234567"
     + h("c3") + b"89", False),
    ("Abort drops the partial message", 4,
     [R(2, 0, 0, h("00000006"), 2), R(9, 0, 1, b"new!", 6)],
     h("06 000000 000008 09 01000000") + b"VVVV" + h("02 000000 000004 02 00000000 00000006")
     + h("06 000000 000004 09 01000000") + b"new!", False),
]


def parse(data_chunks, *, chunk_size=128, **kw):
    reader = ChunkReader(**kw)
    reader.chunk_size = chunk_size
    out = []
    for piece in data_chunks:
        reader.receive_data(piece)
        while (msg := reader.next_message()) is not NEED_DATA:
            out.append(msg)
    return out, reader


def splits(data: bytes, mode: str, seed: int = 0):
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rnd = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rnd.randint(1, 7)
        out.append(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("mode", ["whole", "bytes", "random"])
@pytest.mark.parametrize("name,chunk_size,msgs,data,roundtrip", TABLE, ids=[t[0] for t in TABLE])
def test_reader_table(name, chunk_size, msgs, data, roundtrip, mode):
    for seed in range(3 if mode == "random" else 1):
        got, reader = parse(splits(data, mode, seed), chunk_size=chunk_size)
        assert got == msgs
        assert reader.pending_bytes == 0


@pytest.mark.parametrize("name,chunk_size,msgs,data,roundtrip",
                         [t for t in TABLE if t[4]], ids=[t[0] for t in TABLE if t[4]])
def test_writer_table(name, chunk_size, msgs, data, roundtrip):
    writer = ChunkWriter(chunk_size)
    assert b"".join(writer.write(msg) for msg in msgs) == data


def test_type3_chunk_omits_extended_timestamp_as_librtmp_does():
    # librtmp (and FFmpeg before 2012) leave the 4-byte extended timestamp out of
    # type-3 continuation chunks; the bytes there are payload.
    data = (h("06 ffffff 00000a 09 01000000 01000000") + b"ABCD" + h("c6") + b"EFGH"
            + h("c6") + b"IJ" + h("03 000000 000001 14 00000000") + b"z")
    for mode in ("whole", "bytes", "random"):
        got, _ = parse(splits(data, mode), chunk_size=4)
        assert got == [R(9, 0x01000000, 1, b"ABCDEFGHIJ", 6), R(20, 0, 0, b"z", 3)]


def test_continuation_with_absolute_timestamp_after_fmt1_is_accepted():
    # Some writers repeat the absolute time (not the delta) on type-3 chunks.
    data = (h("06 000000 000001 09 01000000") + b"a"
            + h("46 ffffff 000006 09 01000000") + b"ABCD" + h("c6 01000000") + b"EF")
    got, _ = parse([data], chunk_size=4)
    assert got[1] == R(9, 0x01000000, 1, b"ABCDEF", 6)


@pytest.mark.parametrize("chunk_size", [1, 128, 65536])
def test_roundtrip_chunk_sizes(chunk_size):
    rnd = random.Random(chunk_size)
    msgs = [
        R(9, i * 33, 1, rnd.randbytes(rnd.choice([0, 1, 500, 70000])), 6 if i % 2 else 4)
        for i in range(6)
    ]
    writer = ChunkWriter(chunk_size)
    data = b"".join(writer.write(m) for m in msgs)
    for mode in ("whole", "random"):
        got, _ = parse(splits(data, mode, chunk_size), chunk_size=chunk_size)
        assert got == msgs


def test_truncated_input_waits():
    data = TABLE[1][3]
    for cut in range(len(data)):
        got, reader = parse([data[:cut]], chunk_size=4)
        assert got == []
        assert reader.pending_bytes <= 18  # at most one partial header kept


def test_payload_buffered_only_as_it_arrives():
    reader = ChunkReader(max_message_size=8 << 20)
    reader.chunk_size = 1 << 20
    reader.receive_data(h("06 000000 7fffff 09 01000000") + b"x" * 10)
    assert reader.next_message() is NEED_DATA
    assert reader._buffered == 10
    assert reader.pending_bytes == 0


ERRORS = [
    ("first chunk with fmt 1", h("44 000000 000001 08") + b"a", "fmt 1"),
    ("first chunk with fmt 3", h("c4") + b"a", "fmt 3"),
    ("type-0 restart in the middle of a message",
     h("04 000000 0000c8 08 01000000") + b"a" * 128 + h("04 000000 000001 08 01000000") + b"a",
     "middle of a message"),
    ("fmt1 in the middle of a message",
     h("04 000000 0000c8 08 01000000") + b"a" * 128 + h("44 000000 000001 08") + b"a",
     "middle of a message"),
    ("chunk size 0", h("02 000000 000004 01 00000000 00000000"), "chunk size"),
    ("chunk size above 16 MiB", h("02 000000 000004 01 00000000 01000001"), "chunk size"),
    ("chunk size with the top bit set", h("02 000000 000004 01 00000000 80000080"), "chunk size"),
    ("Set Chunk Size too short", h("02 000000 000002 01 00000000 0001"), "too short"),
    ("oversized message", h("04 000000 100000 08 01000000"), "exceeds"),
]


@pytest.mark.parametrize("name,data,match", ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_reader_errors(name, data, match, mode):
    with pytest.raises(RemoteProtocolError, match=match):
        parse(splits(data, mode), max_message_size=1 << 16)


def test_too_many_chunk_streams():
    data = b"".join(h(f"{c:02x} 000000 000001 08 01000000") + b"a" for c in (3, 4, 5))
    parse([data], max_chunk_streams=3)
    with pytest.raises(RemoteProtocolError, match="chunk streams"):
        parse([data], max_chunk_streams=2)


def test_buffered_bytes_limit():
    data = (h("04 000000 001000 08 01000000") + b"a" * 128
            + h("05 000000 001000 08 01000000") + b"b" * 128)
    parse([data], max_buffered_bytes=256)
    with pytest.raises(RemoteProtocolError, match="incomplete"):
        parse([data], max_buffered_bytes=200)


messages_st = st.lists(
    st.builds(
        RawMessage,
        type_id=st.sampled_from([8, 9, 18, 20]),
        timestamp=st.integers(0, 0xFFFFFFFF),
        msid=st.integers(0, 5),
        payload=st.binary(max_size=600),
        csid=st.sampled_from([3, 4, 63, 64, 319, 320, 65599]),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(msgs=messages_st, chunk_size=st.integers(1, 700), cuts=st.lists(st.integers(1, 50), max_size=40))
def test_writer_reader_roundtrip_random_splits(msgs, chunk_size, cuts):
    writer = ChunkWriter(chunk_size)
    data = b"".join(writer.write(m) for m in msgs)
    pieces, i = [], 0
    for c in cuts:
        pieces.append(data[i : i + c])
        i += c
    pieces.append(data[i:])
    got, _ = parse(pieces, chunk_size=chunk_size, max_chunk_streams=10)
    assert got == msgs


@settings(max_examples=300, deadline=1000)
@given(data=st.binary(max_size=3000), chunk_size=st.sampled_from([1, 4, 128]))
def test_arbitrary_bytes_end_in_messages_or_protocol_error(data, chunk_size):
    reader = ChunkReader(max_message_size=4096, max_chunk_streams=8, max_buffered_bytes=8192)
    reader.chunk_size = chunk_size
    try:
        for i in range(0, len(data), 97):
            reader.receive_data(data[i : i + 97])
            while (msg := reader.next_message()) is not NEED_DATA:
                assert isinstance(msg, RawMessage)
                assert len(msg.payload) <= 4096
            assert reader._buffered <= 8192
            assert reader.pending_bytes <= 18
    except RemoteProtocolError:
        pass
