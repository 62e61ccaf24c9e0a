"""The sans-I/O publish session (ingest/session.py): command flow, replies,
state table, and fuzzing of handshake + chunks + session together."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import amf0
from ingest import messages as m
from ingest.amf0 import ECMAArray
from ingest.chunk import NEED_DATA, ChunkReader, ChunkWriter
from ingest.errors import LocalProtocolError, RemoteProtocolError
from ingest.handshake import ClientHandshake
from ingest.session import (
    TRANSITIONS,
    ConnectRequest,
    Ev,
    HandshakeComplete,
    MediaData,
    Metadata,
    PlayRequest,
    PublishRequest,
    ServerSession,
    State,
    Unpublished,
    state_diagram,
    valid_name,
)


class Peer:
    """The client side, in memory."""

    def __init__(self, session: ServerSession, *, split: str = "whole") -> None:
        self.s = session
        self.w = ChunkWriter()
        self.r = ChunkReader()
        self.split = split
        self.rnd = random.Random(3)
        self.events: list = []
        hs = ClientHandshake()
        self.push(hs.initial_bytes())
        reply = self.s.data_to_send()
        self.push(hs.receive_data(reply))

    def push(self, data: bytes) -> list:
        pieces = [data]
        if self.split == "bytes":
            pieces = [data[i : i + 1] for i in range(len(data))]
        elif self.split == "random":
            pieces, i = [], 0
            while i < len(data):
                n = self.rnd.randint(1, 50)
                pieces.append(data[i : i + n])
                i += n
        new = []
        for p in pieces:
            self.s.receive_data(p)
            while (ev := self.s.next_event()) is not NEED_DATA:
                new.append(ev)
        self.events += new
        return new

    def send(self, msg) -> list:
        return self.push(self.w.write(msg.to_raw()))

    def replies(self) -> list:
        self.r.receive_data(self.s.data_to_send())
        out = []
        while (raw := self.r.next_message()) is not NEED_DATA:
            out.append(m.decode(raw))
        return out

    def connect(self, app="live"):
        self.send(m.SetChunkSize(4096))
        self.w.set_chunk_size(4096)
        return self.send(m.Command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://h/{app}",
                                                      "flashVer": "FMLE/3.0"}))


def connected(split="whole") -> Peer:
    p = Peer(ServerSession(), split=split)
    assert isinstance(p.events[0], HandshakeComplete)
    [ev] = p.connect()
    assert ev == ConnectRequest("live", "rtmp://h/live", "FMLE/3.0",
                                {"app": "live", "tcUrl": "rtmp://h/live", "flashVer": "FMLE/3.0"})
    p.s.accept_connect()
    return p


def publishing(split="whole") -> Peer:
    p = connected(split)
    p.replies()
    p.send(m.Command("releaseStream", 2.0, None, ["key"]))
    p.send(m.Command("FCPublish", 3.0, None, ["key"]))
    p.send(m.Command("createStream", 4.0, None))
    [ev] = p.send(m.Command("publish", 0.0, None, ["key?token=1", "live"], 1, 4))
    assert ev == PublishRequest("key", "token=1", "live", 1)
    p.s.accept_publish()
    return p


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_connect_reply_as_nginx_rtmp_and_mediamtx(split):
    p = connected(split)
    r = p.replies()
    assert [type(x) for x in r] == [m.WindowAckSize, m.SetPeerBandwidth, m.SetChunkSize, m.Command]
    assert r[0].size == 2_500_000 and r[2].size == 4096
    res = r[3]
    assert (res.name, res.transaction_id) == ("_result", 1.0)
    assert res.command_object["fmsVer"].startswith("FMS/")
    assert res.args[0]["code"] == "NetConnection.Connect.Success"
    assert p.s.state is State.CONNECTED


@pytest.mark.parametrize("split", ["whole", "random"])
def test_publish_flow(split):
    p = publishing(split)
    r = p.replies()
    cmds = [(x.name, x.transaction_id) for x in r if isinstance(x, m.Command)]
    assert cmds == [("_result", 2.0), ("_result", 3.0), ("_result", 4.0),
                    ("onFCPublish", 0.0), ("onStatus", 0.0)]
    create = [x for x in r if isinstance(x, m.Command)][2]
    assert create.command_object is None and create.args == [1.0]  # FFmpeg's strict parse
    uc = [x for x in r if isinstance(x, m.UserControl)]
    assert uc == [m.UserControl.stream_begin(1)]
    status = r[-1]
    assert status.msid == 1
    assert status.args[0]["code"] == "NetStream.Publish.Start"
    assert p.s.state is State.PUBLISHING
    # Metadata then media.
    meta = ECMAArray(width=320.0, encoder="obs-output module")
    evs = p.send(m.DataMessage(["@setDataFrame", "onMetaData", meta], 0, 1))
    assert evs == [Metadata({"width": 320.0, "encoder": "obs-output module"})]
    evs = p.send(m.Media(m.VIDEO, 33, 1, b"\x17\x00\x00\x00\x00abc"))
    assert evs == [MediaData("video", 33, b"\x17\x00\x00\x00\x00abc")]
    evs = p.send(m.Media(m.AUDIO, 40, 1, b"\xaf\x01xyz"))
    assert evs == [MediaData("audio", 40, b"\xaf\x01xyz")]
    # Stop as OBS does.
    assert p.send(m.Command("FCUnpublish", 5.0, None, ["key"])) == [Unpublished("FCUnpublish")]
    assert p.send(m.Command("deleteStream", 6.0, None, [1.0])) == []
    assert p.s.state is State.CONNECTED


def test_garbled_metadata_does_not_kill_the_publisher():
    p = publishing()
    body = amf0.encode("@setDataFrame", "onMetaData") + bytes.fromhex("08 00000002 0005") + b"width" \
        + amf0.encode(320.0) + bytes.fromhex("0003") + b"bad" + bytes.fromhex("42")
    from ingest.chunk import RawMessage
    evs = p.push(p.w.write(RawMessage(m.DATA_AMF0, 0, 1, body, 4)))
    # The ECMA array itself could not be finished: nothing usable, but no error.
    assert len(evs) == 1 and isinstance(evs[0], Metadata) and evs[0].error
    assert p.send(m.Media(m.VIDEO, 0, 1, b"\x17")) == [MediaData("video", 0, b"\x17")]


def test_aggregate_message_is_split():
    p = publishing()
    tag = lambda t, ts, body: (bytes((t,)) + len(body).to_bytes(3, "big") + ts.to_bytes(3, "big")
                               + b"\x00" + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big"))
    from ingest.chunk import RawMessage
    payload = tag(9, 100, b"V1") + tag(8, 110, b"A1")
    evs = p.push(p.w.write(RawMessage(m.AGGREGATE, 1000, 1, payload, 6)))
    assert evs == [MediaData("video", 1000, b"V1"), MediaData("audio", 1010, b"A1")]


def test_refuse_publish_sends_error_status():
    p = connected()
    p.replies()
    [ev] = p.send(m.Command("publish", 0.0, None, ["wrong"], 1, 4))
    p.s.refuse_publish("unknown stream key", "NetStream.Publish.BadName")
    status = p.replies()[-1]
    assert status.name == "onStatus"
    assert status.args[0] == {"level": "error", "code": "NetStream.Publish.BadName",
                              "description": "unknown stream key"}
    assert p.s.state is State.CLOSED and p.s.failed_attempt


def test_reject_connect_sends_error():
    p = Peer(ServerSession())
    p.connect("other")
    p.s.reject_connect("Unknown application 'other'.")
    err = p.replies()[-1]
    assert err.name == "_error" and err.args[0]["code"] == "NetConnection.Connect.Rejected"


def test_play_request_and_refusal():
    p = connected()
    p.replies()
    [ev] = p.send(m.Command("play", 0.0, None, ["stream"], 1, 4))
    assert ev == PlayRequest("stream", 1)
    p.s.refuse_play("publish only")
    st = p.replies()[-1].args[0]
    assert st["code"] == "NetStream.Play.Failed" and st["level"] == "error"


@pytest.mark.parametrize("key", ["", "a b", "k\x00", "x" * 257, "é", "a/b", "'"])
def test_invalid_stream_keys_refused_before_use(key):
    p = connected()
    p.replies()
    with pytest.raises(RemoteProtocolError) as exc:
        p.send(m.Command("publish", 0.0, None, [key], 1, 4))
    assert exc.value.status == "NetStream.Publish.BadName"
    assert p.replies()[-1].args[0]["code"] == "NetStream.Publish.BadName"
    assert p.s.failed_attempt


def test_invalid_app_refused_before_use():
    p = Peer(ServerSession())
    with pytest.raises(RemoteProtocolError):
        p.connect("li\x01ve")
    assert p.replies()[-1].name == "_error"


def test_app_name_normalised():
    p = Peer(ServerSession())
    [ev] = p.connect("'live/?x=1' ")
    assert ev.app == "live"


def test_valid_name():
    assert valid_name("live_abc-123.XYZ~")
    assert not valid_name("x" * 257)


def test_ping_and_ack():
    s = ServerSession(window_ack_size=1000)
    p = Peer(s)
    p.connect()
    s.accept_connect()
    p.replies()
    p.send(m.UserControl(m.UC_PING_REQUEST, (1234).to_bytes(4, "big")))
    assert p.replies() == [m.UserControl.ping_response(1234)]
    # The peer asks for an ack every 500 bytes.
    p.send(m.WindowAckSize(500))
    p.send(m.Command("noop", 0.0, None, ["x" * 600]))
    acks = [x for x in p.replies() if isinstance(x, m.Acknowledgement)]
    assert len(acks) == 1 and acks[0].sequence_number == s.bytes_received


def test_commands_before_connect_are_protocol_errors():
    p = Peer(ServerSession())
    with pytest.raises(RemoteProtocolError, match="before connect"):
        p.send(m.Command("createStream", 2.0, None))


def test_second_connect_is_a_protocol_error():
    p = connected()
    with pytest.raises(RemoteProtocolError, match="unexpected connect"):
        p.send(m.Command("connect", 1.0, {"app": "live"}))
    assert p.s.state is State.CLOSED


def test_publish_twice_is_a_protocol_error():
    p = publishing()
    with pytest.raises(RemoteProtocolError, match="unexpected publish"):
        p.send(m.Command("publish", 0.0, None, ["key"], 1, 4))


def test_local_misuse_is_local_protocol_error():
    p = connected()
    with pytest.raises(LocalProtocolError):
        p.s.accept_publish()
    with pytest.raises(LocalProtocolError):
        p.s.accept_connect()


def test_media_before_publish_is_ignored():
    p = connected()
    assert p.send(m.Media(m.VIDEO, 0, 1, b"\x17")) == []
    assert p.s.ignored_messages == 1


def test_too_many_create_stream():
    p = connected()
    for i in range(8):
        p.send(m.Command("createStream", float(i + 2), None))
    with pytest.raises(RemoteProtocolError, match="createStream"):
        p.send(m.Command("createStream", 20.0, None))


def test_transition_table_is_total_for_close_and_drawn():
    for s in State:
        if s is not State.CLOSED:
            assert TRANSITIONS[(s, Ev.CLOSE)] is State.CLOSED
    diagram = state_diagram()
    for (src, ev), dst in TRANSITIONS.items():
        if ev is not Ev.CLOSE:
            assert f"{src.value} --> {dst.value}: {ev.value}" in diagram


# ------------------------------------------------------------------ fuzzing


def _drive(session: ServerSession, data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        session.receive_data(data[i : i + step])
        for _ in range(10_000):
            ev = session.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, ConnectRequest):
                session.accept_connect()
            elif isinstance(ev, PublishRequest):
                session.accept_publish()
            elif isinstance(ev, PlayRequest):
                session.refuse_play("no")
        else:
            raise AssertionError("event loop did not end")
        assert session._reader._buffered <= 1 << 16
        assert session._reader.pending_bytes <= 18
        session.data_to_send()


def _valid_prefix() -> bytes:
    """Handshake + connect + createStream + publish, as a client sends them."""
    hs = ClientHandshake(random_bytes=lambda n: bytes(n))
    w = ChunkWriter()
    body = hs.initial_bytes() + bytes(1536)
    for msg in (m.Command("connect", 1.0, {"app": "live"}), m.Command("createStream", 2.0, None),
                m.Command("publish", 0.0, None, ["k"], 1, 4)):
        body += w.write(msg.to_raw())
    return body


VALID_PREFIX = _valid_prefix()


def _fuzz_session() -> ServerSession:
    return ServerSession(max_message_size=1 << 14, max_buffered_bytes=1 << 16,
                         max_chunk_streams=8, random_bytes=lambda n: bytes(n))


@settings(max_examples=300, deadline=2000)
@given(data=st.binary(max_size=4000), step=st.integers(1, 600))
def test_arbitrary_bytes_after_handshake(data, step):
    s = _fuzz_session()
    try:
        _drive(s, b"\x03" + bytes(1536) + bytes(1536) + data, step)
    except RemoteProtocolError:
        assert s.state is State.CLOSED


@settings(max_examples=300, deadline=2000)
@given(data=st.binary(max_size=3000), step=st.integers(1, 600))
def test_arbitrary_bytes_while_publishing(data, step):
    s = _fuzz_session()
    try:
        _drive(s, VALID_PREFIX + data, step)
    except RemoteProtocolError:
        assert s.state is State.CLOSED


@settings(max_examples=200, deadline=2000)
@given(data=st.binary(max_size=4000))
def test_arbitrary_bytes_from_the_start(data):
    s = _fuzz_session()
    try:
        _drive(s, data, 512)
    except RemoteProtocolError:
        assert s.state is State.CLOSED


@settings(max_examples=200, deadline=2000)
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID_PREFIX) - 1), st.integers(0, 255)),
                      min_size=1, max_size=5))
def test_mutated_valid_session(flips):
    data = bytearray(VALID_PREFIX)
    for pos, val in flips:
        data[pos] = val
    s = _fuzz_session()
    try:
        _drive(s, bytes(data), 97)
    except RemoteProtocolError:
        assert s.state is State.CLOSED
