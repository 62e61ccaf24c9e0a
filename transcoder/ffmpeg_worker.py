"""The ffmpeg CLI transcode backend (`python -m transcoder.ffmpeg_worker`),
selected by transcode.backend = "ffmpeg".

Same pipe protocol and outputs as `transcoder.worker`. The source access
units are written to one ffmpeg process as FLV (the ingest's items are FLV
payloads already: avcC sequence header, length-prefixed NAL units, ms
timestamps; Adobe FLV spec v10.1 §E.4.3), ffmpeg decodes once, `split`s,
scales and encodes each rendition with libx264, and writes one FLV stream
per rendition to its own pipe (`pipe:N`), which a reader thread parses back
into output messages. The command line is built with ffmpeg-python.

Differences from the PyAV worker: keyframes are forced with
`-force_key_frames source`; T_DONE means "ffmpeg accepted the input" (ffmpeg
does not say which input produced which output), so pass-through audio can
run up to ffmpeg's latency ahead. A filter graph cannot lose an output while
it runs, so T_DISABLE (degradation under load) drains ffmpeg at the next
source keyframe and starts a new one without that rendition: the remaining
renditions continue from that keyframe, the CPU of the dropped one is freed.
Opus audio is transcoded to AAC in this process with PyAV, as the PyAV
worker does (`worker.AacTranscoder`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import ffmpeg

from ingest.avc import parse_avcc, picture_size
from ingest.errors import RemoteProtocolError
from transcoder.worker import AacTranscoder
from transcoder.workerloop import WorkerSetup, main as worker_main, x264_options
from transcoder.workerproto import (
    F_KEYFRAME, T_CONFIG, T_DISABLE, T_FLUSH, T_FRAME, T_OUT_CONFIG, T_OUT_FRAME, TRACK_AUDIO, TRACK_VIDEO,
    Message, ProtocolError, config_payload, json_message, parse_config_payload,
)

FFMPEG = os.environ.get("LIVECAST_FFMPEG", "ffmpeg")
_FLV_HEADER = b"FLV\x01\x01\x00\x00\x00\x09" + b"\x00\x00\x00\x00"  # video only, PreviousTagSize0
# An FLV tag's DataSize is 24 bits: a tag can never be larger than this.
_MAX_TAG = (1 << 24) - 1


def flv_video_tag(ts_ms: int, keyframe: bool, packet_type: int, cts: int, body: bytes) -> bytes:
    """One FLV video tag (AVC): FrameType|CodecID, AVCPacketType, CompositionTime."""
    data = bytes([(0x10 if keyframe else 0x20) | 7, packet_type]) + (cts & 0xFFFFFF).to_bytes(3, "big") + body
    ts = ts_ms & 0xFFFFFFFF
    head = bytes([9]) + len(data).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\0\0\0"
    return head + data + (11 + len(data)).to_bytes(4, "big")


class FlvVideoReader:
    """Sans-I/O FLV reader: bytes in, (ts, cts, keyframe, packet_type, body) out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes):
        self._buf += data
        if not self._header_done:
            if len(self._buf) < 13:
                return
            if self._buf[:3] != b"FLV":
                raise ProtocolError("ffmpeg output is not FLV")
            offset = int.from_bytes(self._buf[5:9], "big")
            del self._buf[: offset + 4]
            self._header_done = True
        while len(self._buf) >= 11:
            size = int.from_bytes(self._buf[1:4], "big")
            if len(self._buf) < 11 + size + 4:
                return
            tag_type = self._buf[0]
            ts = int.from_bytes(self._buf[4:7], "big") | (self._buf[7] << 24)
            data = bytes(self._buf[11 : 11 + size])
            del self._buf[: 11 + size + 4]
            if tag_type != 9 or len(data) < 5 or data[0] & 0x0F != 7:
                continue  # script data, or not AVC
            cts = int.from_bytes(data[2:5], "big", signed=False)
            if cts & 0x800000:
                cts -= 1 << 24
            yield ts, cts, (data[0] >> 4) == 1, data[1], data[5:]


class FfmpegWorker:
    """A `workerloop` backend driving one ffmpeg CLI process per publish session."""

    THREADED_OUTPUT = True  # the pipe reader threads emit whenever ffmpeg writes

    def __init__(self, setup: WorkerSetup, emit) -> None:
        self.setup = setup
        self.emit = emit  # thread-safe (workerloop.PipeOutput)
        self.audio = AacTranscoder(setup.audio_kbps, emit)
        self.disabled: set[int] = set()
        self.encoding: list[int] = []  # rendition index of each output of the running ffmpeg
        self.record: bytes | None = None
        self.size = (0, 0)
        self.proc: subprocess.Popen | None = None
        self.threads: list[threading.Thread] = []

    def command(self, out_fds: list[int], renditions: list[int] | None = None) -> list[str]:
        """The ffmpeg command line encoding `renditions` (indexes; all by default)."""
        if renditions is None:
            renditions = list(range(len(self.setup.renditions)))
        # (No -fflags nobuffer: with it ffmpeg 5.1 loses the first GOP read from a pipe.)
        inp = ffmpeg.input("pipe:0", format="flv", probesize=32, analyzeduration=0)
        split = inp.video.filter_multi_output("split", len(renditions))
        outs = []
        sw, sh = self.size
        for k, i in enumerate(renditions):
            r = self.setup.renditions[i]
            w = r.width_for(sw, sh) if sh else -2
            scaled = split.stream(k).filter("scale", w, r.height, flags=self.setup.scaler.lower())
            opts = x264_options(self.setup, r.video_kbps)
            outs.append(ffmpeg.output(
                scaled, f"pipe:{out_fds[k]}", format="flv", vcodec="libx264", pix_fmt="yuv420p",
                preset=opts["preset"], bf=opts["bf"], g=opts["g"],
                sc_threshold=opts["sc_threshold"], threads=opts["threads"],
                **({"tune": opts["tune"]} if "tune" in opts else {}),
                **{"b:v": opts["b"], "maxrate": opts["maxrate"], "bufsize": opts["bufsize"],
                   "force_key_frames": "source", "fps_mode": "passthrough", "flush_packets": 1,
                   "enc_time_base": -1,  # keep the ms timestamps exact (5.1 defaults to 1/fps)
                   "flvflags": "no_duration_filesize"}))
        args = ffmpeg.merge_outputs(*outs).global_args("-nostdin", "-copyts", "-loglevel", "error").compile(cmd=FFMPEG)
        return args

    def _start(self) -> bool:
        """Start ffmpeg for the renditions still enabled; False when there are none."""
        self.encoding = [i for i in range(len(self.setup.renditions)) if i not in self.disabled]
        if not self.encoding:
            return False
        pipes = [os.pipe() for _ in self.encoding]
        cmd = self.command([w for _r, w in pipes], self.encoding)
        # stdout unused; stderr is inherited: the server drains and logs ours.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     pass_fds=[w for _r, w in pipes])
        for _r, w in pipes:
            os.close(w)
        self.threads = [threading.Thread(target=self._read, args=(i, r), daemon=True)
                        for i, (r, _w) in zip(self.encoding, pipes)]
        for t in self.threads:
            t.start()
        self.proc.stdin.write(_FLV_HEADER + flv_video_tag(0, True, 0, 0, self.record))
        return True

    def _read(self, index: int, fd: int) -> None:
        reader = FlvVideoReader()
        with os.fdopen(fd, "rb", buffering=0) as f:
            while data := f.read(1 << 16):
                for ts, cts, key, ptype, body in reader.feed(data):
                    if index in self.disabled:
                        continue
                    if ptype == 0:
                        try:
                            w, h = picture_size(parse_avcc(body))
                        except RemoteProtocolError:
                            w, h = 0, 0
                        self.emit(json_message(T_OUT_CONFIG, config_payload("h264", body, w, h), track=index))
                    elif ptype == 1:
                        self.emit(Message(T_OUT_FRAME, index, F_KEYFRAME if key else 0, ts, ts + cts, 0, body))

    def _stop(self) -> None:
        """Close ffmpeg's input: it encodes what it has, its outputs end, it exits."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        for t in self.threads:
            t.join()
        self.proc.wait()
        self.proc = None

    def handle(self, msg: Message) -> None:
        if msg.track == TRACK_AUDIO and msg.type in (T_CONFIG, T_FRAME):
            if msg.type == T_CONFIG:
                codec, record, _w, _h, rate, channels = parse_config_payload(msg.json())
                self.audio.config(codec, record, rate, channels)
            else:
                self.audio.frame(msg)
        elif msg.type == T_CONFIG and msg.track == TRACK_VIDEO:
            codec, record, w, h, _rate, _ch = parse_config_payload(msg.json())
            if codec != "h264":
                raise ProtocolError(f"video codec {codec!r} is not supported by the transcoder")
            if record != self.record:
                self._stop()
                self.record, self.size = record, (w, h)
        elif msg.type == T_FRAME and msg.track == TRACK_VIDEO:
            if self.record is None:
                return
            if msg.keyframe and self.proc is not None and set(self.encoding) & self.disabled:
                self._stop()  # a rendition was dropped: go on without it from this keyframe
            if self.proc is None and not (msg.keyframe and self._start()):
                return
            self.proc.stdin.write(flv_video_tag(msg.dts, msg.keyframe, 1, msg.pts - msg.dts, msg.payload))
            self.proc.stdin.flush()
        elif msg.type == T_FLUSH:
            self._stop()
            self.audio.flush()
        elif msg.type == T_DISABLE:
            self.disabled.add(msg.track)
        else:
            raise ProtocolError(f"unexpected message type {msg.type}")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self._stop()


if __name__ == "__main__":
    sys.exit(worker_main(FfmpegWorker))
