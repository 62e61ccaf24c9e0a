"""Real media for the FLV parser tests, made with PyAV (FFmpeg's encoders and
its FLV muxer, which writes Enhanced RTMP headers for HEVC/AV1/Opus), plus a
tiny FLV file reader that yields the tag bodies an RTMP publisher would send.
"""
from __future__ import annotations

import fractions
import io
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class Packet:
    kind: str  # "video" / "audio"
    data: bytes
    dts: int  # ms
    pts: int
    keyframe: bool


def picture(width: int, height: int, i: int) -> av.VideoFrame:
    """A moving gradient, so the encoder makes real P/B frames."""
    frame = av.VideoFrame(width, height, "yuv420p")
    for j, plane in enumerate(frame.planes):
        w = plane.line_size
        rows = plane.buffer_size // w
        row = bytes(((x + 3 * i) * (j + 1)) & 0xFF for x in range(w))
        plane.update(b"".join(row[(y + i) % 7 :] + row[: (y + i) % 7] for y in range(rows)))
    return frame


def silence(samples: int, i: int, layout: str = "stereo") -> av.AudioFrame:
    frame = av.AudioFrame(format="fltp", layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = 48000
    frame.pts = i * samples
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


def encode_flv(
    vcodec: str | None,
    acodec: str | None,
    *,
    width: int = 320,
    height: int = 240,
    frames: int = 30,
    options: dict | None = None,
    profile: str | None = None,
    channels: str = "stereo",
) -> bytes:
    """Encode `frames` video frames at 30 fps (and the same duration of audio)
    and mux them with FFmpeg's FLV muxer into memory."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="flv")
    vs = aus = None
    if vcodec:
        vs = out.add_stream(vcodec, rate=30, options=options or {})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if profile:
            vs.codec_context.profile = profile
    if acodec:
        aus = out.add_stream(acodec, rate=48000)
        aus.layout = channels
    audio_i = 0
    audio_frame_size = None
    for i in range(frames):
        if vs is not None:
            f = picture(width, height, i)
            f.pts = i
            f.time_base = fractions.Fraction(1, 30)
            for p in vs.encode(f):
                out.mux(p)
        if aus is not None:
            audio_frame_size = audio_frame_size or aus.codec_context.frame_size or 1024
            while audio_i * audio_frame_size * 30 < (i + 1) * 48000:
                for p in aus.encode(silence(audio_frame_size, audio_i, channels)):
                    out.mux(p)
                audio_i += 1
    for s in (vs, aus):
        if s is not None:
            for p in s.encode(None):
                out.mux(p)
    out.close()
    return buf.getvalue()


def flv_tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """(tag type, 32-bit timestamp ms, body) of every tag of an FLV file."""
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        tags.append((tag_type, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def demux(data: bytes) -> list[Packet]:
    """The packets FFmpeg's FLV demuxer reads back from the same bytes."""
    out = []
    with av.open(io.BytesIO(data), "r", format="flv") as c:
        for p in c.demux():
            if p.size == 0 or p.dts is None:
                continue
            tb = p.time_base
            to_ms = lambda t: int(t * tb * 1000)  # noqa: E731  (FLV time base is 1/1000)
            out.append(Packet(p.stream.type, bytes(p), to_ms(p.dts), to_ms(p.pts), bool(p.is_keyframe)))
    return out


def annexb_nals(annexb: bytes) -> list[bytes]:
    """Split an Annex-B byte stream at its start codes."""
    nals = []
    i = annexb.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = annexb.find(b"\x00\x00\x01", start)
        end = len(annexb) if j < 0 else j
        nal = annexb[start:end]
        if j >= 0 and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # the 4-byte start code's leading zero
        if nal:
            nals.append(nal)
        i = j
    return nals


def encode_h264_raw(width: int, height: int, frames: int = 10, profile: str | None = None, options=None):
    """libx264 with the global-header flag: (SPS, PPS, [(annexb, pts, dts, key)])."""
    c = av.CodecContext.create("libx264", "w")
    c.width, c.height, c.pix_fmt = width, height, "yuv420p"
    c.time_base = fractions.Fraction(1, 30)
    c.framerate = 30
    c.flags |= av.codec.context.Flags.global_header
    if profile:
        c.profile = profile
    c.options = options or {}
    packets = []
    for i in range(frames):
        f = picture(width, height, i)
        f.pts = i
        packets += c.encode(f)
    packets += c.encode(None)
    nals = annexb_nals(bytes(c.extradata))
    sps = [n for n in nals if n[0] & 0x1F == 7]
    pps = [n for n in nals if n[0] & 0x1F == 8]
    return sps[0], pps[0], [(bytes(p), p.pts, p.dts, bool(p.is_keyframe)) for p in packets]


def avcc(sps: bytes, pps: bytes, length_size: int = 4) -> bytes:
    """Build an AVCDecoderConfigurationRecord (14496-15 §5.3.3.1)."""
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFC | (length_size - 1), 0xE1])
        + len(sps).to_bytes(2, "big") + sps
        + b"\x01" + len(pps).to_bytes(2, "big") + pps
    )


def length_prefixed(nals: list[bytes], length_size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
