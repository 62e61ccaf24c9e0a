"""What both transcode worker backends share: the settings message (T_SETUP),
the libx264 options, a rate-limited stderr log, and the process's message
loop over the `workerproto` pipes.

A backend is a class `Backend(setup, emit)` with `handle(msg)` and `close()`,
and a `THREADED_OUTPUT` flag: False when every output is produced inside
`handle()` (PyAV: outputs are batched and written with the input's T_DONE),
True when other threads emit at any time (the ffmpeg CLI's pipe readers:
each output is written at once, under a lock).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

from transcoder.ladder import Rendition
from transcoder.workerproto import T_DONE, T_ERROR, T_SETUP, Message, MessageReader, ProtocolError, encode, json_message

# x264 must never place a keyframe on its own: only where the source has one.
NO_GOP = 1 << 20
# Stdin reads; one pipe buffer at a time.
READ_SIZE = 1 << 16


@dataclass
class WorkerSetup:
    renditions: list[Rendition]
    preset: str = "veryfast"
    tune: str = "zerolatency"
    bframes: int = 0
    # x264 threads per rendition; 0 = x264's choice. Decoder threads likewise.
    encoder_threads: int = 0
    decoder_threads: int = 0
    fps_hint: int = 30  # rate-control hint only; timestamps drive x264 (vfr input)
    scaler: str = "BICUBIC"  # swscale algorithm, the ffmpeg CLI's default
    audio_kbps: int = 128

    @classmethod
    def from_json(cls, value: dict) -> "WorkerSetup":
        try:
            renditions = [Rendition(str(r["name"]), int(r["height"]), int(r["kbps"])) for r in value["renditions"]]
            return cls(renditions=renditions, preset=str(value.get("preset", "veryfast")),
                       tune=str(value.get("tune", "zerolatency")), bframes=int(value.get("bframes", 0)),
                       encoder_threads=int(value.get("encoder_threads", 0)),
                       decoder_threads=int(value.get("decoder_threads", 0)),
                       fps_hint=max(1, int(value.get("fps_hint", 30))), scaler=str(value.get("scaler", "BICUBIC")),
                       audio_kbps=int(value.get("audio_kbps", 128)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad setup message: {exc!r}") from None

    def to_json(self) -> dict:
        return {"renditions": [{"name": r.name, "height": r.height, "kbps": r.video_kbps} for r in self.renditions],
                "preset": self.preset, "tune": self.tune, "bframes": self.bframes,
                "encoder_threads": self.encoder_threads, "decoder_threads": self.decoder_threads,
                "fps_hint": self.fps_hint, "scaler": self.scaler, "audio_kbps": self.audio_kbps}


def x264_options(setup: WorkerSetup, kbps: int) -> dict[str, str]:
    """The libx264 settings, shared by both backends and the bench."""
    opts = {"preset": setup.preset, "bf": str(setup.bframes), "g": str(NO_GOP), "sc_threshold": "0",
            "b": f"{kbps}k", "maxrate": f"{kbps}k", "bufsize": f"{kbps}k",  # 1 s VBV: live CBR-like
            "threads": str(setup.encoder_threads)}
    if setup.tune:
        opts["tune"] = setup.tune
    return opts


_last_log = 0.0


def log(text: str) -> None:
    # stderr goes to the server's log; rate-limited so a corrupt stream cannot flood it.
    global _last_log
    now = time.monotonic()
    if now - _last_log >= 1.0:
        _last_log = now
        print(f"transcoder worker[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


class PipeOutput:
    """Output messages to the server, batched or immediate (see the module doc)."""

    def __init__(self, out, immediate: bool) -> None:
        self._out = out
        self._immediate = immediate
        self._pending: list[bytes] = []
        self._lock = threading.Lock()

    def emit(self, msg: Message) -> None:
        with self._lock:
            if self._immediate:
                self._out.write(encode(msg))
                self._out.flush()
            else:
                self._pending.append(encode(msg))

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._out.write(b"".join(self._pending))
                self._pending.clear()
            self._out.flush()


def serve(backend, infd: int = 0, out=None) -> int:
    """The worker's message loop: until stdin closes (the server is gone or
    done with us), or the server breaks the protocol."""
    output = PipeOutput(out or sys.stdout.buffer, immediate=backend.THREADED_OUTPUT)
    reader = MessageReader()
    worker = None
    try:
        while data := os.read(infd, READ_SIZE):
            reader.receive_data(data)
            for msg in reader.messages():
                if msg.type == T_SETUP:
                    if worker is not None:
                        worker.close()
                    worker = backend(WorkerSetup.from_json(msg.json()), output.emit)
                    continue
                if worker is None:
                    raise ProtocolError("first message must be T_SETUP")
                worker.handle(msg)
                # Every output caused by this input is emitted (PyAV) or handed
                # to the encoder (ffmpeg): acknowledge it.
                output.emit(Message(T_DONE, seq=msg.seq))
                output.flush()
        return 0
    except ProtocolError as exc:
        output.emit(json_message(T_ERROR, {"message": str(exc)}))
        output.flush()
        return 2
    finally:
        if worker is not None:
            worker.close()  # never leave an encoder process behind


def main(backend) -> int:
    try:
        return serve(backend)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
