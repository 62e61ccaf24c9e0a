"""Benchmark: the ABR ladder of a 1080p30 source (720p/480p/360p), through our
pipeline (StreamHub -> Transcoder supervisor -> PyAV worker process) and
through the Debian ffmpeg CLI doing the same ladder (decode once, split, scale,
libx264 with the same preset/tune/B-frames/bitrates/VBV and keyframes at the
source's) on the same input, in the same run.

    .venv/bin/python bench/ladder.py [--seconds 20] [--backend pyav|ffmpeg]

Prints wall time, realtime factor (media seconds / wall seconds) and CPU
seconds (user+sys of this process and its children). Note: PyAV bundles
FFmpeg 8.1 and its own x264 build; the CLI is Debian's FFmpeg 5.1, so the
encoders are not byte-identical. Goals: RTF >= 1.0, CPU ratio <= 1.10.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import av  # noqa: E402

from ingest.frames import StreamEnd, StreamStart  # noqa: E402
from ingest.hub import StreamHub  # noqa: E402
from transcode_media import source  # noqa: E402
from transcoder.ffmpeg_worker import _FLV_HEADER, flv_video_tag  # noqa: E402
from transcoder.ladder import parse_ladder  # noqa: E402
from transcoder.transcode import TranscodeSettings, Transcoder  # noqa: E402
from transcoder.workerloop import WorkerSetup, x264_options  # noqa: E402

LADDER = parse_ladder("720p:720:2800,480p:480:1200,360p:360:700")


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


async def run_pipeline(video, settings: TranscodeSettings) -> tuple[float, float, dict]:
    hub = StreamHub(1)
    counts: dict[str, int] = {}

    def sink(name, queue):
        async def drain():
            while await queue.get() is not None:
                counts[name] = counts.get(name, 0) + 1
        asyncio.get_running_loop().create_task(drain())

    tc = Transcoder("bench", hub, LADDER, settings, sink)
    c0, t0 = cpu(), time.monotonic()
    tc.start()
    hub.publish(StreamStart(1, 1))
    hub.publish(video[0])
    for f in video[1]:
        while tc._consumer is not None and tc._consumer.queued_items > 200:
            await asyncio.sleep(0.005)  # as fast as the worker goes, never overflowing the hub
        hub.publish(f)
    hub.publish(StreamEnd(1, 1, "done"))
    hub.close()
    await tc.wait()
    await asyncio.sleep(0)
    return time.monotonic() - t0, cpu() - c0, tc.status()


def run_ffmpeg_cli(flv: Path, settings: TranscodeSettings) -> tuple[float, float]:
    setup = WorkerSetup(LADDER, preset=settings.preset, tune=settings.tune, bframes=settings.bframes)
    n = len(LADDER)
    graph = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";" + ";".join(
        f"[s{i}]scale={r.width_for(1920, 1080)}:{r.height}:flags={settings.scaler}[o{i}]" for i, r in enumerate(LADDER))
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "flv", "-i", str(flv), "-copyts", "-filter_complex", graph]
    for i, r in enumerate(LADDER):
        o = x264_options(setup, r.video_kbps)
        cmd += ["-map", f"[o{i}]", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", o["preset"], "-bf", o["bf"],
                "-g", o["g"], "-sc_threshold", "0", "-b:v", o["b"], "-maxrate", o["maxrate"], "-bufsize", o["bufsize"],
                "-threads", o["threads"], "-force_key_frames", "source", "-fps_mode", "passthrough",
                "-enc_time_base", "-1", "-f", "flv", "-y", os.devnull]
        if "tune" in o:
            cmd[-4:-4] = ["-tune", o["tune"]]
    c0, t0 = cpu(), time.monotonic()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - t0, cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backend", default="pyav", choices=["pyav", "ffmpeg"])
    args = ap.parse_args()
    settings = TranscodeSettings(backend=args.backend, consumer_max_items=2000)
    t = time.monotonic()
    video = source(1920, 1080, seconds=args.seconds, fps=30, gop=60, kbps=6000)
    print(f"source: 1080p30, {args.seconds:.0f} s, keyframe every 2 s, 6 Mbit/s "
          f"(generated in {time.monotonic() - t:.1f} s); ladder {', '.join(r.name for r in LADDER)}; "
          f"preset={settings.preset} tune={settings.tune} bframes={settings.bframes} scaler={settings.scaler}")
    with tempfile.TemporaryDirectory() as tmp:
        flv = Path(tmp) / "source.flv"
        flv.write_bytes(_FLV_HEADER + flv_video_tag(0, True, 0, 0, video[0].record) + b"".join(
            flv_video_tag(f.dts, f.keyframe, 1, f.pts - f.dts, f.data) for f in video[1]))
        wall_p, cpu_p, status = asyncio.run(run_pipeline(video, settings))
        wall_f, cpu_f = run_ffmpeg_cli(flv, settings)
    frames = {r["name"]: r["frames"] for r in status["renditions"]}
    media = args.seconds
    print(f"{'pipeline':<34}{'wall s':>8}{'RTF':>7}{'CPU s':>8}{'CPU ratio':>11}")
    lavc = ".".join(map(str, av.library_versions["libavcodec"][:2]))
    print(f"{'livecast ' + args.backend + ' (PyAV ' + av.__version__ + ', lavc ' + lavc + ')':<34}"
          f"{wall_p:>8.2f}{media / wall_p:>7.2f}{cpu_p:>8.2f}{cpu_p / cpu_f:>11.2f}")
    print(f"{'ffmpeg CLI (Debian 5.1)':<34}{wall_f:>8.2f}{media / wall_f:>7.2f}{cpu_f:>8.2f}{1.0:>11.2f}")
    print(f"frames per rendition: {frames}; restarts {status['restarts']}, degradations {status['degradations']}")
    print(f"goals: RTF >= 1.0 -> {'met' if media / wall_p >= 1.0 else 'NOT met'}; "
          f"CPU ratio <= 1.10 -> {'met' if cpu_p / cpu_f <= 1.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
