"""RTMP handshake (ingest/handshake.py, RTMP spec 5.2; FP9 digest variant)."""
from __future__ import annotations

import random

import pytest

from ingest.errors import RemoteProtocolError
from ingest.handshake import (
    PACKET_SIZE,
    PLAYER_KEY_TEXT,
    SERVER_KEY,
    SERVER_KEY_TEXT,
    ClientHandshake,
    ServerHandshake,
    digest_offset,
    find_digest,
    sign_response,
)


def feed(server: ServerHandshake, data: bytes, mode: str) -> bytes:
    """Feed in pieces; once complete, the rest of the input is chunk data."""
    out = b""
    if mode == "whole":
        return server.receive_data(data)
    rnd = random.Random(7)
    i = 0
    while i < len(data) and not server.complete:
        n = 1 if mode == "bytes" else rnd.randint(1, 900)
        out += server.receive_data(data[i : i + n])
        i += n
    server.unused_data += data[i:]
    return out


@pytest.mark.parametrize("mode", ["whole", "bytes", "random"])
def test_simple_handshake(mode):
    client = ClientHandshake()
    server = ServerHandshake()
    reply = feed(server, client.initial_bytes(), mode)
    assert len(reply) == 1 + 2 * PACKET_SIZE
    assert reply[0] == 3
    s1 = reply[1 : 1 + PACKET_SIZE]
    assert s1[4:8] == b"\x00\x00\x00\x00"  # never a version without a digest
    assert reply[1 + PACKET_SIZE :] == client.c1  # S2 echoes C1
    assert not server.complete
    c2 = client.receive_data(reply)
    assert c2 == s1
    chunk_data = b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x10\x00"
    feed(server, c2 + chunk_data, mode)
    assert server.complete and server.scheme is None
    assert server.unused_data == chunk_data


@pytest.mark.parametrize("scheme", [0, 1])
@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_digest_handshake_validates_for_both_schemes(scheme, mode):
    client = ClientHandshake(digest_scheme=scheme)
    assert find_digest(client.c1, PLAYER_KEY_TEXT)[0] == scheme
    server = ServerHandshake()
    reply = feed(server, client.initial_bytes(), mode)
    assert server.scheme == scheme
    s1 = reply[1 : 1 + PACKET_SIZE]
    assert s1[4] >= 3  # FFmpeg only validates when byte 4 >= 3; it must pass then
    c2 = client.receive_data(reply)  # raises if S1's digest or S2's signature is wrong
    assert client.server_validated and client.server_scheme == scheme
    # The digest in S1 sits where the client's scheme puts it.
    off = digest_offset(s1, scheme)
    assert find_digest(s1, SERVER_KEY_TEXT) == (scheme, s1[off : off + 32])
    server.receive_data(c2)
    assert server.complete


def test_client_detects_a_bad_server_signature():
    client = ClientHandshake(digest_scheme=0)
    reply = bytearray(ServerHandshake().receive_data(client.initial_bytes()))
    reply[-1] ^= 0xFF
    with pytest.raises(RemoteProtocolError, match="S2"):
        client.receive_data(bytes(reply))


def test_s2_signature_is_keyed_by_the_client_digest():
    client = ClientHandshake(digest_scheme=1)
    reply = ServerHandshake().receive_data(client.initial_bytes())
    s2 = reply[1 + PACKET_SIZE :]
    digest = find_digest(client.c1, PLAYER_KEY_TEXT)[1]
    assert sign_response(s2[:-32], digest, SERVER_KEY) == s2[-32:]


def test_version_without_valid_digest_falls_back_to_simple():
    c1 = bytearray(random.Random(1).randbytes(PACKET_SIZE))
    c1[4:8] = bytes((9, 0, 124, 2))
    server = ServerHandshake()
    reply = server.receive_data(b"\x03" + bytes(c1))
    assert server.scheme is None
    assert reply[5:9] == b"\x00\x00\x00\x00"
    assert reply[1 + PACKET_SIZE :] == bytes(c1)


def test_c2_is_not_checked():
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(PACKET_SIZE))
    server.receive_data(b"\xAA" * PACKET_SIZE)
    assert server.complete


@pytest.mark.parametrize("version", [6, 8])
def test_rtmpe_refused(version):
    with pytest.raises(RemoteProtocolError, match="RTMPE"):
        ServerHandshake().receive_data(bytes((version,)))


@pytest.mark.parametrize("version", [0, 4, 31, 32, 255])
def test_other_versions_refused(version):
    with pytest.raises(RemoteProtocolError, match="version"):
        ServerHandshake().receive_data(bytes((version,)) + bytes(10))


def test_partial_c1_waits_without_reply():
    server = ServerHandshake()
    assert server.receive_data(b"\x03" + bytes(PACKET_SIZE - 1)) == b""
    assert not server.complete
