"""Bit reader for H.264/HEVC parameter sets and AudioSpecificConfig.

Implements the descriptors of ITU-T H.264 §7.2 / H.265 §7.2: u(n) fixed-width
fields read MSB first and ue(v)/se(v) Exp-Golomb codes (H.264 §9.1), plus
removal of emulation-prevention bytes (H.264 §7.4.1: 0x000003 inside a NAL
unit payload stands for 0x0000).

Reading past the end raises RemoteProtocolError: every byte here came from a
publisher, so a short record is the peer's fault, never an IndexError.
"""
from __future__ import annotations

from .errors import RemoteProtocolError

# A ue(v) code with more than 31 leading zeros cannot encode any value the
# specs allow (they are all < 2**32); stopping there bounds the work a hostile
# SPS full of zero bits can cause.
MAX_EXP_GOLOMB_LEADING_ZEROS = 31


def remove_emulation_prevention(nal: bytes) -> bytes:
    """Return the RBSP of a NAL unit: drop every 0x03 that follows 0x0000."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first reader over a bytes object."""

    def __init__(self, data: bytes, *, what: str = "bitstream") -> None:
        self._value = int.from_bytes(data, "big")
        self._nbits = len(data) * 8
        self._pos = 0
        self._what = what

    @property
    def bits_left(self) -> int:
        return self._nbits - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def u(self, n: int) -> int:
        """u(n): the next n bits as an unsigned integer."""
        if n == 0:
            return 0
        if self._pos + n > self._nbits:
            raise RemoteProtocolError(f"truncated {self._what}: need {n} bits, {self.bits_left} left")
        shift = self._nbits - self._pos - n
        self._pos += n
        return (self._value >> shift) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._nbits:
            raise RemoteProtocolError(f"truncated {self._what}: cannot skip {n} bits")
        self._pos += n

    def ue(self) -> int:
        """ue(v): unsigned Exp-Golomb code (H.264 §9.1)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > MAX_EXP_GOLOMB_LEADING_ZEROS:
                raise RemoteProtocolError(f"invalid Exp-Golomb code in {self._what}")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """se(v): signed Exp-Golomb code, mapped per H.264 Table 9-3."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
