"""Source media for the transcoder tests and bench: PyAV's lavfi `testsrc2`
(a moving picture, so thumbnails and encoders see change) encoded with
libx264 at a fixed keyframe interval, and turned into the ingest's items
(avcC + 4-byte length-prefixed NAL units, ms timestamps)."""
from __future__ import annotations

import fractions
import functools

import av

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame
from transcoder.worker import avcc_from_extradata, length_prefixed, split_annexb

T0_MS = 1000


@functools.lru_cache(maxsize=8)
def source(width: int = 640, height: int = 360, seconds: float = 3.0, fps: int = 30, gop: int = 30,
           bframes: int = 0, kbps: int = 1500) -> tuple[CodecConfig, tuple[Frame, ...]]:
    count = int(seconds * fps)
    src = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, fps)
    enc.framerate = fps
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                   "bf": str(bframes), "b": f"{kbps}k"}
    enc.open()
    packets = []
    try:
        for i, frame in enumerate(src.decode(video=0)):
            if i >= count:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, enc.time_base
            # lavfi marks every generated picture as I, which libx264 obeys.
            frame.pict_type = av.video.frame.PictureType.NONE
            packets += enc.encode(frame)
    finally:
        src.close()
    packets += enc.encode(None)
    config = CodecConfig(VIDEO, "h264", avcc_from_extradata(bytes(enc.extradata)), width=width, height=height)
    frames = tuple(
        Frame(VIDEO, "h264", T0_MS + p.dts * 1000 // fps, T0_MS + p.pts * 1000 // fps, bool(p.is_keyframe),
              length_prefixed(split_annexb(bytes(p))))
        for p in packets)
    return config, frames


@functools.lru_cache(maxsize=4)
def opus(seconds: float = 3.0) -> tuple[CodecConfig, tuple[Frame, ...]]:
    """An Opus track as Enhanced RTMP carries it: OpusHead record, raw packets."""
    src = av.open(f"sine=frequency=440:sample_rate=48000:duration={seconds}", format="lavfi")
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.bit_rate = 64000
    enc.open()
    res = av.AudioResampler(format="s16", layout="stereo", rate=48000)
    fifo = av.AudioFifo()
    packets = []
    try:
        for frame in src.decode(audio=0):
            frame.pts = None
            for f in res.resample(frame):
                fifo.write(f)
            while fifo.samples >= 960:
                f = fifo.read(960)
                packets += enc.encode(f)
    finally:
        src.close()
    packets += enc.encode(None)
    config = CodecConfig(AUDIO, "opus", bytes(enc.extradata), sample_rate=48000, channels=2)
    frames = tuple(Frame(AUDIO, "opus", T0_MS + i * 20, T0_MS + i * 20, True, bytes(p)) for i, p in enumerate(packets))
    return config, frames
