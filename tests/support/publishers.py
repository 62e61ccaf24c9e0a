"""Real encoders that publish to the server under test: the ffmpeg CLI,
GStreamer's rtmp2sink, and PyAV in a child process (PyAV holds the GIL while
it opens an rtmp:// URL, so it must not run in the test's event loop)."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys


def ffmpeg_args(url: str, *, seconds: float = 3, size: str = "320x240", rate: int = 30, gop: int = 30,
                realtime: bool = True, video: str = "libx264", extra: tuple[str, ...] = ()) -> list[str]:
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    if realtime:
        args.append("-re")
    args += [
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", video, "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k", *extra,
        "-f", "flv", url,
    ]
    return args


async def start_ffmpeg(url: str, **kwargs) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *ffmpeg_args(url, **kwargs), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def ffmpeg_publish(url: str, *, timeout: float = 60, **kwargs) -> tuple[int, str]:
    """Publish and wait for the encoder to finish; returns (exit code, stderr)."""
    proc = await start_ffmpeg(url, **kwargs)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await stop_process(proc)
    return proc.returncode, err.decode(errors="replace")


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 3.0) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def gstreamer_args(url: str, *, buffers: int = 90) -> list[str]:
    return [
        "gst-launch-1.0", "-q",
        "videotestsrc", "is-live=true", f"num-buffers={buffers}", "!",
        "video/x-raw,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=30", "!",
        "h264parse", "!", "flvmux", "name=mux", "streamable=true", "!",
        "rtmp2sink", f"location={url}",
        "audiotestsrc", "is-live=true", f"num-buffers={buffers * 48000 // 30 // 1024}", "!",
        "audio/x-raw,rate=48000,channels=2", "!", "avenc_aac", "!", "aacparse", "!", "mux.",
    ]


async def start_gstreamer(url: str, **kwargs) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *gstreamer_args(url, **kwargs), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


_PYAV_PUBLISHER = r"""
import fractions, sys
import av
url, seconds = sys.argv[1], float(sys.argv[2])
out = av.open(url, "w", format="flv")
v = out.add_stream("libx264", rate=30)
v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "30"}
a = out.add_stream("aac", rate=48000)
a.layout = "stereo"
import time
start = time.monotonic()
samples = 0
for i in range(int(seconds * 30)):
    frame = av.VideoFrame(320, 240, "yuv420p")
    for n, plane in enumerate(frame.planes):
        plane.update(bytes([(i * 8 + n * 60) % 256]) * plane.buffer_size)
    frame.pts = i
    frame.time_base = fractions.Fraction(1, 30)
    for p in v.encode(frame): out.mux(p)
    while samples < (i + 1) * 1600:
        af = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in af.planes: plane.update(bytes(plane.buffer_size))
        af.sample_rate = 48000; af.pts = samples; af.time_base = fractions.Fraction(1, 48000)
        samples += 1024
        for p in a.encode(af): out.mux(p)
    delay = start + (i + 1) / 30 - time.monotonic()
    if delay > 0: time.sleep(delay)
for s in (v, a):
    for p in s.encode(None): out.mux(p)
out.close()
"""


async def start_pyav(url: str, seconds: float = 3) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PYAV_PUBLISHER, url, str(seconds),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
