"""Tiny real H.264/AAC media for the packager tests, encoded with PyAV and
turned into the ingest's item types (what the RTMP ingest would publish):
avcC record + 4-byte length-prefixed NAL units, ASC + raw AAC frames, ms times.
"""
from __future__ import annotations

import asyncio
import fractions
import functools
import math
import struct

import av

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame

T0_MS = 1000  # RTMP-like clock start; keeps B-frame dts (pts - reorder) >= 0


def _nals(annexb: bytes) -> list[bytes]:
    out, i, n = [], 0, len(annexb)
    starts = []
    while True:
        j = annexb.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = annexb[s:e]
        if k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # 4-byte start code leaves a zero
        if nal:
            out.append(nal)
    return out


def _avcc(sps: bytes, pps: bytes) -> bytes:
    return (bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + struct.pack(">H", len(sps)) + sps
            + b"\x01" + struct.pack(">H", len(pps)) + pps)


@functools.lru_cache(maxsize=8)
def h264(seconds: float = 2.0, fps: int = 30, gop: int = 15, width: int = 320, height: int = 240,
         bframes: int = 2) -> tuple[CodecConfig, tuple[Frame, ...]]:
    c = av.CodecContext.create("libx264", "w")
    c.width, c.height, c.pix_fmt = width, height, "yuv420p"
    c.time_base = fractions.Fraction(1, fps)
    c.framerate = fps
    c.gop_size = gop
    c.options = {"preset": "veryfast", "bf": str(bframes), "sc_threshold": "0", "tune": "zerolatency" if not bframes else "film",
                 "keyint_min": str(gop), "threads": "1"}
    c.flags |= av.codec.context.Flags.global_header
    c.open()
    nals = _nals(bytes(c.extradata))
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    config = CodecConfig(VIDEO, "h264", _avcc(sps, pps), width=width, height=height)
    packets = []
    count = int(seconds * fps)
    for i in range(count):
        f = av.VideoFrame(width, height, "yuv420p")
        for j, p in enumerate(f.planes):
            # A moving gradient-ish pattern so frames differ.
            p.update(bytes(((i * 7 + j * 50 + k // 97) % 256) for k in range(p.buffer_size)))
        f.pts = i
        packets += c.encode(f)
    packets += c.encode(None)
    frames = []
    for p in packets:
        data = b"".join(struct.pack(">I", len(n)) + n for n in _nals(bytes(p)))
        dts = T0_MS + p.dts * 1000 // fps
        pts = T0_MS + p.pts * 1000 // fps
        frames.append(Frame(VIDEO, "h264", dts, pts, bool(p.is_keyframe), data))
    return config, tuple(frames)


@functools.lru_cache(maxsize=8)
def aac(seconds: float = 2.0, rate: int = 48000) -> tuple[CodecConfig, tuple[Frame, ...]]:
    c = av.CodecContext.create("aac", "w")
    c.sample_rate = rate
    c.layout = "stereo"
    c.format = "fltp"
    c.flags |= av.codec.context.Flags.global_header
    c.open()
    packets = []
    n = c.frame_size
    total = int(seconds * rate)
    for i in range(total // n):
        f = av.AudioFrame(format="fltp", layout="stereo", samples=n)
        tone = b"".join(struct.pack("<f", 0.2 * math.sin(2 * math.pi * 440 * (i * n + k) / rate)) for k in range(n))
        for p in f.planes:
            p.update(tone)
        f.sample_rate = rate
        f.pts = i * n
        f.time_base = fractions.Fraction(1, rate)
        packets += c.encode(f)
    packets += c.encode(None)
    config = CodecConfig(AUDIO, "aac", bytes(c.extradata), sample_rate=rate, channels=2)
    frames = []
    for idx, p in enumerate(packets):
        ms = T0_MS + (idx * n) * 1000 // rate  # whole ms, as RTMP carries it (jitters)
        frames.append(Frame(AUDIO, "aac", ms, ms, True, bytes(p)))
    return config, tuple(frames)


def interleave(*tracks: tuple[Frame, ...]) -> list[Frame]:
    """Merge tracks by dts like an RTMP publisher's send order."""
    return sorted((f for t in tracks for f in t), key=lambda f: f.dts)


class FeedConsumer:
    """A StreamHub-like consumer the test feeds by hand; None ends the live."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    async def get(self):
        return await self.queue.get()

    def feed(self, items):
        for it in items:
            self.queue.put_nowait(it)
