"""Unwrapping of RTMP message timestamps (RTMP 1.0 §5.3.1.2: 32-bit
milliseconds that wrap after ~49.7 days) into a 64-bit, non-decreasing
millisecond timeline, one instance per track.

The chunk layer has already extended the 24-bit header field with the
extended timestamp, so the input is a full uint32. Each new value is read as
the signed 32-bit distance from the previous input (serial-number arithmetic,
RFC 1982), which handles the forward wrap at 2**32 and small backward steps
alike. Outputs never go backwards: a backward step within a track (audio
interleaving jitter of a few ms is common) repeats the previous output, but
the internal position keeps the step so later values are not shifted.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_WRAP = 1 << 32
_HALF = 1 << 31
# A backward step larger than this is not jitter but a sender restarting or
# mis-wrapping its clock (e.g. a peer that wraps at 2**24 because it dropped
# the extended timestamp: SRS#2409). We then continue from the last output
# instead of freezing the timeline until the clock catches up again.
DEFAULT_MAX_BACKWARD_MS = 10_000


class TimestampUnwrapper:
    def __init__(self, *, max_backward_ms: int = DEFAULT_MAX_BACKWARD_MS) -> None:
        self.max_backward_ms = max_backward_ms
        self._last_raw: int | None = None
        self._position = 0  # honest unwrapped position of the last input
        self._last_out = 0
        self.backward_steps = 0  # outputs held back because the input went back
        self.discontinuities = 0  # large backward jumps re-based

    def unwrap(self, ts32: int) -> int:
        ts32 &= _WRAP - 1
        if self._last_raw is None:
            self._last_raw = ts32
            self._position = self._last_out = ts32
            return ts32
        delta = ((ts32 - self._last_raw + _HALF) % _WRAP) - _HALF
        self._last_raw = ts32
        if delta < -self.max_backward_ms:
            self.discontinuities += 1
            log.warning("timestamp jumped back %d ms; continuing from %d", -delta, self._last_out)
            self._position = self._last_out
            return self._last_out
        self._position += delta
        if self._position < self._last_out:
            self.backward_steps += 1
            return self._last_out
        self._last_out = self._position
        return self._position
