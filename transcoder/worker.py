"""The ABR ladder transcode worker process (`python -m transcoder.worker`).

Reads `workerproto` messages on stdin, writes them on stdout. The source
video is decoded once with PyAV, scaled once per rendition, and encoded with
libx264. Every rendition gets an IDR exactly where the source has a keyframe
(and nowhere else: no scene cuts, an effectively infinite GOP), so segments
and independent parts of all renditions start at the same timestamps
(draft-pantos-hls-rfc8216bis §6.2.4 / Apple HLS authoring spec 6.x: "keyframes
aligned across variants"). A non-AAC audio source (Opus) is transcoded once
to AAC here; AAC sources never reach the worker.

The worker exits when stdin closes, so a dead server never leaves it behind.
"""
from __future__ import annotations

import fractions
import sys
from dataclasses import dataclass, field

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from transcoder.ladder import Rendition
from transcoder.workerloop import WorkerSetup, log, main as worker_main, x264_options
from transcoder.workerproto import (
    F_KEYFRAME, T_CONFIG, T_DISABLE, T_FLUSH, T_FRAME, T_OUT_CONFIG, T_OUT_FRAME, TRACK_AUDIO, TRACK_VIDEO,
    Message, ProtocolError, config_payload, json_message, parse_config_payload,
)

MS = fractions.Fraction(1, 1000)


# -- H.264 byte formats --------------------------------------------------------------------
def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (ITU-T H.264 Annex B.2)."""
    nals, starts, i = [], [], 0
    while (j := data.find(b"\x00\x00\x01", i)) >= 0:
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:e]
        # A 4-byte start code leaves its leading zero on the previous NAL;
        # a NAL unit never ends in a zero byte (rbsp_trailing_bits).
        nal = nal.rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def length_prefixed(nals: list[bytes]) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def build_avcc(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), 4-byte lengths."""
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1])
    out += len(sps).to_bytes(2, "big") + sps + b"\x01" + len(pps).to_bytes(2, "big") + pps
    if sps[1] in (100, 110, 122, 144):
        # High profiles carry chroma format and bit depths; we encode 4:2:0 8-bit.
        out += bytes([0xFC | 1, 0xF8, 0xF8, 0])
    return bytes(out)


def avcc_from_extradata(extradata: bytes) -> bytes:
    nals = split_annexb(extradata)
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    return build_avcc(sps, pps)


# -- the pipeline --------------------------------------------------------------------------
@dataclass
class AacTranscoder:
    """A non-AAC audio source (Opus from Enhanced RTMP) decoded and encoded to
    AAC once, for every rendition; shared by both worker backends. Output
    timestamps count samples from the first input packet (sample-exact, in
    ms at one place), so they never drift from the source's clock."""

    def __init__(self, kbps: int, emit) -> None:
        self.kbps = kbps
        self.emit = emit
        self.source: tuple | None = None
        self.decoder = None
        self.encoder = None
        self.resampler = None
        self.fifo = None
        self.base_ms: int | None = None
        self.samples = 0

    def config(self, codec: str, record: bytes, sample_rate: int, channels: int) -> None:
        self._drain()
        self.source = (codec, record, sample_rate, channels)
        try:
            dec = av.CodecContext.create(codec, "r")
            if record:
                dec.extradata = record
        except (av.error.FFmpegError, ValueError) as exc:
            # Not a codec this FFmpeg decodes: the renditions go without audio.
            log(f"audio codec {codec!r}: {exc}")
            self.decoder = None
            return
        self.decoder = dec

    def frame(self, msg: Message) -> None:
        if self.decoder is None:
            return
        if self.base_ms is None:
            self.base_ms, self.samples = msg.pts, 0
        pkt = av.Packet(msg.payload)
        pkt.pts, pkt.dts, pkt.time_base = msg.pts, msg.dts, MS
        try:
            frames = self.decoder.decode(pkt)
        except av.error.FFmpegError as exc:
            log(f"audio decode error: {exc}")
            return
        for frame in frames:
            self._encode(frame)

    def _encode(self, frame) -> None:
        if self.encoder is None:
            enc = av.CodecContext.create("aac", "w")
            enc.sample_rate = frame.sample_rate
            enc.layout = frame.layout.name
            enc.format = "fltp"
            enc.bit_rate = self.kbps * 1000
            enc.time_base = fractions.Fraction(1, frame.sample_rate)
            enc.flags |= av.codec.context.Flags.global_header
            enc.open()
            self.encoder = enc
            self.fifo = av.AudioFifo()
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
            cfg = config_payload("aac", bytes(enc.extradata), sample_rate=frame.sample_rate,
                                 channels=frame.layout.nb_channels)
            self.emit(json_message(T_OUT_CONFIG, cfg, track=TRACK_AUDIO))
        frame.pts = None
        for f in self.resampler.resample(frame):
            self.fifo.write(f)
        size = self.encoder.frame_size
        while self.fifo.samples >= size:
            self._encode_frame(self.fifo.read(size))

    def _encode_frame(self, frame) -> None:
        enc = self.encoder
        if frame is not None:
            frame.pts, frame.time_base = self.samples, enc.time_base
            self.samples += frame.samples
        for p in enc.encode(frame):
            # Sample-exact clock, converted to ms at this one place (floored).
            # The encoder's priming frame has pts -1024: it is stamped before
            # the first input so every later frame keeps the source's timing
            # (clamped to 0 it would delay the whole track by one frame).
            ms = self.base_ms + int(p.pts) * 1000 // enc.sample_rate
            self.emit(Message(T_OUT_FRAME, track=TRACK_AUDIO, flags=F_KEYFRAME, dts=ms, pts=ms, payload=bytes(p)))

    def _drain(self) -> None:
        if self.encoder is not None:
            if self.fifo.samples:
                # The tail shorter than a frame (FFmpeg's AAC encoder takes a small last frame).
                self._encode_frame(self.fifo.read())
            self._encode_frame(None)
        self.encoder = None
        self.base_ms = None

    def flush(self) -> None:
        """End of a publish session: the last AAC frames out, a fresh decoder for the next one."""
        self._drain()
        if self.source is not None:
            self.config(*self.source)


@dataclass
class _Output:
    index: int
    rendition: Rendition
    enabled: bool = True
    encoder: av.CodecContext | None = None
    scaler: VideoReformatter = field(default_factory=VideoReformatter)
    size: tuple[int, int] = (0, 0)


class LadderPipeline:
    """Decode once, scale and encode per rendition; `emit` gets output messages."""

    def __init__(self, setup: WorkerSetup, emit) -> None:
        self.setup = setup
        self.emit = emit
        self.outputs = [_Output(i, r) for i, r in enumerate(setup.renditions)]
        self.interpolation = Interpolation[setup.scaler]
        self.video_record: bytes | None = None
        self.decoder: av.CodecContext | None = None
        self.src_size = (0, 0)
        self._key_pts: set[int] = set()
        self.audio = AacTranscoder(setup.audio_kbps, emit)
        self.errors = 0

    # video ------------------------------------------------------------------------------
    def _open_decoder(self) -> None:
        dec = av.CodecContext.create("h264", "r")
        dec.extradata = self.video_record
        if self.setup.decoder_threads:
            dec.thread_count = self.setup.decoder_threads
        dec.thread_type = "AUTO"
        self.decoder = dec

    def video_config(self, record: bytes) -> None:
        if record == self.video_record and self.decoder is not None:
            return  # a repeated sequence header: nothing changes
        self._drain_decoder()
        self.video_record = record
        self.decoder = None

    def video_frame(self, msg: Message) -> None:
        if self.video_record is None:
            return  # no decoder config yet
        if self.decoder is None:
            if not msg.keyframe:
                return  # a fresh decoder starts on a keyframe
            self._open_decoder()
        if msg.keyframe:
            self._key_pts.add(msg.pts)
        pkt = av.Packet(msg.payload)
        pkt.pts, pkt.dts, pkt.time_base = msg.pts, msg.dts, MS
        try:
            frames = self.decoder.decode(pkt)
        except av.error.FFmpegError as exc:
            self.errors += 1
            log(f"decode error at pts {msg.pts}: {exc}")
            return
        for frame in frames:
            self._encode(frame)

    def _drain_decoder(self) -> None:
        if self.decoder is None:
            return
        try:
            for frame in self.decoder.decode(None):
                self._encode(frame)
        except av.error.FFmpegError as exc:
            log(f"decoder drain: {exc}")
        self.decoder = None

    def _open_encoder(self, out: _Output, width: int, height: int) -> None:
        r = out.rendition
        w = r.width_for(width, height)
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = w, r.height, "yuv420p"
        enc.time_base = MS
        enc.framerate = fractions.Fraction(self.setup.fps_hint, 1)
        enc.flags |= av.codec.context.Flags.global_header
        enc.options = x264_options(self.setup, r.video_kbps)
        enc.open()
        out.encoder, out.size = enc, (w, r.height)
        cfg = config_payload("h264", avcc_from_extradata(bytes(enc.extradata)), w, r.height)
        self.emit(json_message(T_OUT_CONFIG, cfg, track=out.index))

    def _encode(self, frame: av.VideoFrame) -> None:
        if frame.pts is None:
            return
        size = (frame.width, frame.height)
        if size != self.src_size:
            # New picture size: new encoders (and a new avcC for every rendition).
            for out in self.outputs:
                self._flush_encoder(out)
            self.src_size = size
        key = frame.pts in self._key_pts
        if key:
            self._key_pts.discard(frame.pts)
            # Forget keyframe pts the decoder never returned (corrupt input).
            self._key_pts = {p for p in self._key_pts if p > frame.pts}
        for out in self.outputs:
            if not out.enabled:
                continue
            if out.encoder is None:
                if not key:
                    continue  # every rendition starts on a source keyframe
                self._open_encoder(out, *size)
            scaled = out.scaler.reformat(frame, out.size[0], out.size[1], "yuv420p",
                                         interpolation=self.interpolation)
            scaled.pts, scaled.time_base = frame.pts, MS
            # libx264 turns a frame marked I into an IDR (closed GOP): the forced keyframe.
            scaled.pict_type = PictureType.I if key else PictureType.NONE
            self._emit_packets(out, out.encoder.encode(scaled))

    def _emit_packets(self, out: _Output, packets) -> None:
        for p in packets:
            data = length_prefixed(split_annexb(bytes(p)))
            flags = F_KEYFRAME if p.is_keyframe else 0
            self.emit(Message(T_OUT_FRAME, track=out.index, flags=flags, dts=int(p.dts), pts=int(p.pts), payload=data))

    def _flush_encoder(self, out: _Output) -> None:
        if out.encoder is not None:
            self._emit_packets(out, out.encoder.encode(None))
            out.encoder = None

    def disable(self, index: int) -> None:
        if 0 <= index < len(self.outputs):
            self.outputs[index].enabled = False
            self.outputs[index].encoder = None

    # session ----------------------------------------------------------------------------
    def flush(self) -> None:
        """End of a publish session: everything out, start clean on the next one."""
        self._drain_decoder()
        for out in self.outputs:
            self._flush_encoder(out)
        self.src_size = (0, 0)
        self._key_pts.clear()
        self.audio.flush()


class PyavWorker:
    """Adapter from messages to LadderPipeline calls (a `workerloop` backend)."""

    THREADED_OUTPUT = False  # every output is emitted inside handle()

    def __init__(self, setup: WorkerSetup, emit) -> None:
        self.pipeline = LadderPipeline(setup, emit)

    def handle(self, msg: Message) -> None:
        p = self.pipeline
        if msg.type == T_FRAME:
            if msg.track == TRACK_VIDEO:
                p.video_frame(msg)
            elif msg.track == TRACK_AUDIO:
                p.audio.frame(msg)
        elif msg.type == T_CONFIG:
            codec, record, _w, _h, rate, channels = parse_config_payload(msg.json())
            if msg.track == TRACK_VIDEO:
                if codec != "h264":
                    raise ProtocolError(f"video codec {codec!r} is not supported by the transcoder")
                p.video_config(record)
            elif msg.track == TRACK_AUDIO:
                p.audio.config(codec, record, rate, channels)
        elif msg.type == T_FLUSH:
            p.flush()
        elif msg.type == T_DISABLE:
            p.disable(msg.track)
        else:
            raise ProtocolError(f"unexpected message type {msg.type}")

    def close(self) -> None:
        pass  # nothing outside this process to stop


if __name__ == "__main__":
    sys.exit(worker_main(PyavWorker))
