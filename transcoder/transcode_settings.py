"""Settings of the ABR transcoder (the [transcode] config section), one value
per limit with why; see docs/abr.md and docs/limits.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transcoder.ladder import Rendition


@dataclass(frozen=True, slots=True)
class TranscodeSettings:
    backend: str = "pyav"  # "pyav" | "ffmpeg"
    preset: str = "veryfast"  # x264 preset: live needs faster than real time
    tune: str = "zerolatency"  # no lookahead, no frame delay in the encoder
    bframes: int = 0  # B-frames add reorder delay; none for live
    encoder_threads: int = 0  # x264 threads per rendition; 0 = x264's choice
    scaler: str = "bicubic"  # swscale algorithm (the ffmpeg CLI's default)
    audio_kbps: int = 128  # AAC bitrate when an Opus source is transcoded
    # A crash loop must not eat the machine: after this many restarts within
    # a minute the live continues with its source rendition only.
    max_restarts_per_minute: int = 3
    # Input messages sent but not yet processed by the worker: bounds the
    # latency the worker can add (~2 s at 30 fps) and the pipe memory.
    max_in_flight: int = 60
    # A worker that processes nothing for this long is hung: kill, restart.
    stall_timeout_s: float = 10.0
    # Falling behind real time: when the oldest unprocessed input is older
    # than this, or the hub had to skip frames for us, drop a rendition.
    degrade_lag_ms: int = 2500
    # Time for the worker to catch up after a drop before the next one.
    degrade_cooldown_s: float = 5.0
    # Per-rendition queue to its packager: ~10 s of 30 fps video + audio.
    queue_max_items: int = 800
    # The supervisor's own hub consumer.
    consumer_max_items: int = 600
    consumer_max_bytes: int = 32 * 1024 * 1024
    # AAC frames (and control items) waiting for the video to catch up.
    max_pending_items: int = 1000
    # Time for the worker to drain at the end of a live, then to exit.
    flush_timeout_s: float = 5.0
    exit_timeout_s: float = 2.0
    # The worker's stderr (and its ffmpeg's) is read all the time, so a chatty
    # worker never blocks on a full pipe; lines go to our log, cut to this
    # length and at most this many a second (a corrupt stream can make a
    # decoder complain on every frame).
    stderr_line_bytes: int = 1000
    stderr_lines_per_s: int = 20

    @classmethod
    def from_config(cls, section: Any) -> "TranscodeSettings":
        """From the [transcode] config section (keys that exist there)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{n: getattr(section, n) for n in names if hasattr(section, n)})

    def worker_setup(self, renditions: list[Rendition], fps_hint: int) -> dict:
        return {"renditions": [{"name": r.name, "height": r.height, "kbps": r.video_kbps} for r in renditions],
                "preset": self.preset, "tune": self.tune, "bframes": self.bframes,
                "encoder_threads": self.encoder_threads, "fps_hint": fps_hint,
                "scaler": self.scaler.upper(), "audio_kbps": self.audio_kbps}


