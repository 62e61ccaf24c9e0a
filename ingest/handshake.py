"""RTMP handshake (RTMP 1.0 spec section 5.2), server and client side.

C0/S0 is one version byte (3 = plain RTMP; 6 and 8 are RTMPE, refused).
C1/S1 and C2/S2 are 1536 bytes. Two variants are answered:

* simple: S1 = time + four zero bytes + random, S2 = echo of C1;
* FP9 "digest": when C1 carries a version in bytes 4..7 and an HMAC-SHA256
  digest keyed with the Flash Player key in either layout (scheme 0: offset
  bytes at 8..11; scheme 1: offset bytes at 772..775), S1 carries a digest
  keyed with the Flash Media Server key in the same scheme and S2 is signed
  with a key derived from the client's digest, so clients that validate the
  server (FFmpeg when playing, librtmp with SWF verification) accept it.

C2 is read and not checked: real publishers do not echo S1 faithfully.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from .errors import LocalProtocolError, RemoteProtocolError

RTMP_VERSION = 3
RTMPE_VERSIONS = (6, 8)
PACKET_SIZE = 1536
DIGEST_SIZE = 32

# The well-known handshake keys: a text part and a shared 32-byte tail.
_KEY_TAIL = bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae"
)
PLAYER_KEY_TEXT = b"Genuine Adobe Flash Player 001"  # 30 bytes: keys C1
SERVER_KEY_TEXT = b"Genuine Adobe Flash Media Server 001"  # 36 bytes: keys S1
PLAYER_KEY = PLAYER_KEY_TEXT + _KEY_TAIL  # 62 bytes: keys C2 signatures
SERVER_KEY = SERVER_KEY_TEXT + _KEY_TAIL  # 68 bytes: keys S2 signatures

# Version we announce in a digest S1 (FMS 4.5.0.1 style; any value >= 3 in
# byte 4 makes FFmpeg validate us, which we pass).
SERVER_VERSION = bytes((4, 5, 0, 1))
CLIENT_VERSION = bytes((9, 0, 124, 2))  # what FFmpeg sends

SCHEMES = (0, 1)


def digest_offset(packet: bytes, scheme: int) -> int:
    """Where the 32-byte digest sits in a C1/S1 of the given scheme."""
    base = 8 if scheme == 0 else 772
    return base + 4 + sum(packet[base : base + 4]) % 728


def compute_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 over the packet without its 32 digest bytes."""
    msg = packet[:offset] + packet[offset + DIGEST_SIZE :]
    return hmac.new(key, msg, hashlib.sha256).digest()


def find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """(scheme, digest) if a valid digest is embedded in either layout."""
    for scheme in SCHEMES:
        off = digest_offset(packet, scheme)
        want = compute_digest(packet, off, key)
        if hmac.compare_digest(want, packet[off : off + DIGEST_SIZE]):
            return scheme, want
    return None


def imprint_digest(packet: bytearray, scheme: int, key: bytes) -> bytes:
    """Write the digest into a 1536-byte packet in place; return it."""
    off = digest_offset(packet, scheme)
    dig = compute_digest(bytes(packet), off, key)
    packet[off : off + DIGEST_SIZE] = dig
    return dig


def sign_response(random_part: bytes, peer_digest: bytes, full_key: bytes) -> bytes:
    """S2/C2 signature: HMAC(key=HMAC(full_key, peer digest), first 1504 bytes)."""
    derived = hmac.new(full_key, peer_digest, hashlib.sha256).digest()
    return hmac.new(derived, random_part, hashlib.sha256).digest()


def _now_ms() -> int:
    return int(time.monotonic() * 1000) & 0xFFFFFFFF


class ServerHandshake:
    """Sans-I/O server handshake.

    Feed bytes with `receive_data`; it returns bytes to send (S0+S1+S2 once
    C0+C1 are in). When `complete` is true, `unused_data` holds the bytes
    that followed C2 (the first chunk data). Never buffers more than
    C0+C1+C2 (3073 bytes) plus what one read delivers after it.
    """

    def __init__(self, *, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._buf = bytearray()
        self._sent_reply = False
        self.complete = False
        self.unused_data = b""
        self.scheme: int | None = None  # digest scheme used, None for simple

    def receive_data(self, data: bytes) -> bytes:
        if self.complete:
            raise LocalProtocolError("handshake already complete")
        self._buf += data
        out = b""
        if not self._sent_reply:
            if self._buf:
                version = self._buf[0]
                if version in RTMPE_VERSIONS:
                    raise RemoteProtocolError("RTMPE (encrypted RTMP) is not supported")
                if version != RTMP_VERSION:
                    raise RemoteProtocolError(f"unsupported RTMP version {version}")
            if len(self._buf) < 1 + PACKET_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
            del self._buf[: 1 + PACKET_SIZE]
            out = bytes((RTMP_VERSION,)) + self._reply(c1)
            self._sent_reply = True
        if len(self._buf) >= PACKET_SIZE:
            self.unused_data = bytes(self._buf[PACKET_SIZE:])  # C2 is not checked
            self._buf = bytearray()
            self.complete = True
        return out

    def _reply(self, c1: bytes) -> bytes:
        found = None
        if c1[4:8] != b"\x00\x00\x00\x00":
            found = find_digest(c1, PLAYER_KEY_TEXT)
        s1 = bytearray(_now_ms().to_bytes(4, "big"))
        if found is None:
            s1 += b"\x00\x00\x00\x00" + self._random(PACKET_SIZE - 8)
            return bytes(s1) + c1  # simple: S2 echoes C1
        scheme, client_digest = found
        self.scheme = scheme
        s1 += SERVER_VERSION + self._random(PACKET_SIZE - 8)
        imprint_digest(s1, scheme, SERVER_KEY_TEXT)
        rand = self._random(PACKET_SIZE - DIGEST_SIZE)
        s2 = rand + sign_response(rand, client_digest, SERVER_KEY)
        return bytes(s1) + s2


class ClientHandshake:
    """Sans-I/O client handshake (used by the tests' RTMP client).

    `digest_scheme` None sends a simple C1; 0 or 1 sends an FP9 C1 in that
    layout and then validates S1's digest and S2's signature.
    """

    def __init__(
        self,
        digest_scheme: int | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.digest_scheme = digest_scheme
        self._random = random_bytes
        c1 = bytearray(_now_ms().to_bytes(4, "big"))
        c1 += (CLIENT_VERSION if digest_scheme is not None else b"\x00" * 4)
        c1 += random_bytes(PACKET_SIZE - 8)
        self._digest = b""
        if digest_scheme is not None:
            self._digest = imprint_digest(c1, digest_scheme, PLAYER_KEY_TEXT)
        self.c1 = bytes(c1)
        self._buf = bytearray()
        self.complete = False
        self.unused_data = b""
        self.server_validated = False
        self.server_scheme: int | None = None

    def initial_bytes(self) -> bytes:
        return bytes((RTMP_VERSION,)) + self.c1

    def receive_data(self, data: bytes) -> bytes:
        if self.complete:
            raise LocalProtocolError("handshake already complete")
        self._buf += data
        need = 1 + 2 * PACKET_SIZE
        if len(self._buf) < need:
            return b""
        if self._buf[0] != RTMP_VERSION:
            raise RemoteProtocolError(f"server answered version {self._buf[0]}")
        s1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
        s2 = bytes(self._buf[1 + PACKET_SIZE : need])
        self.unused_data = bytes(self._buf[need:])
        self._buf = bytearray()
        self.complete = True
        if self.digest_scheme is None:
            return s1  # C2 echoes S1
        found = find_digest(s1, SERVER_KEY_TEXT)
        if found is None:
            raise RemoteProtocolError("server S1 digest is not valid")
        if sign_response(s2[:-DIGEST_SIZE], self._digest, SERVER_KEY) != s2[-DIGEST_SIZE:]:
            raise RemoteProtocolError("server S2 signature is not valid")
        self.server_validated = True
        self.server_scheme = found[0]
        rand = self._random(PACKET_SIZE - DIGEST_SIZE)
        return rand + sign_response(rand, found[1], PLAYER_KEY)
