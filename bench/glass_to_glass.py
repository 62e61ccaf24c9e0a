"""Glass-to-glass latency: encoder clock to the picture in a browser.

A publisher (PyAV, in a child process) paints the wall-clock time into every
frame as a row of black/white blocks (48 bits of milliseconds), encodes
1 s GOPs with libx264 (ultrafast, zerolatency) and publishes over RTMP in
real time. Headless Chromium plays /watch/<room> with hls.js in low-latency
mode; a script in the page reads the blocks back from the video through a
canvas every 100 ms and records now - painted time. Both clocks are this
machine's. Reports median and p95 over the measuring window.

    .venv/bin/python bench/glass_to_glass.py --seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BITS = 48
BLOCK = 16
WIDTH, HEIGHT, FPS = 960, 540, 30

PUBLISHER = r"""
import fractions, sys, time
import av
url, seconds, bits, block, width, height, fps = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:8])
out = av.open(url, "w", format="flv")
v = out.add_stream("libx264", rate=fps)
v.width, v.height, v.pix_fmt = width, height, "yuv420p"
v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "keyint_min": str(fps), "sc_threshold": "0"}
start = time.monotonic()
for i in range(int(seconds * fps)):
    due = start + i / fps
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    ms = int(time.time() * 1000)
    frame = av.VideoFrame(width, height, "yuv420p")
    y, u, vv = frame.planes
    row = bytearray(b"\x80" * y.line_size * block)
    for b in range(bits):
        value = 235 if (ms >> (bits - 1 - b)) & 1 else 16
        for line in range(block):
            at = line * y.line_size + b * block
            row[at:at + block] = bytes([value]) * block
    luma = bytes(row) + bytes([60 + (i % 60)]) * (y.line_size * (height - block))
    y.update(luma)
    u.update(b"\x80" * u.buffer_size)
    vv.update(b"\x80" * vv.buffer_size)
    frame.pts = i
    frame.time_base = fractions.Fraction(1, fps)
    for p in v.encode(frame):
        out.mux(p)
for p in v.encode(None):
    out.mux(p)
out.close()
"""

READER = """([bits, block]) => {
  const v = document.querySelector('video');
  if (!v || !v.videoWidth) return null;
  const c = window.__g2g || (window.__g2g = document.createElement('canvas'));
  c.width = v.videoWidth; c.height = block;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(v, 0, 0, v.videoWidth, v.videoHeight, 0, 0, v.videoWidth, v.videoHeight);
  const data = ctx.getImageData(0, 0, bits * block, block).data;
  let ms = 0;
  for (let b = 0; b < bits; b++) {
    const x = b * block + block / 2, y = block / 2;
    const luma = data[(y * c.width + x) * 4];
    ms = ms * 2 + (luma > 128 ? 1 : 0);
  }
  return Date.now() - ms;
}"""


async def measure(seconds: float, warmup: float) -> list[float]:
    from conftest import server_config
    from livecast.app import Livecast
    from storage.demo import ensure_demo
    from support.browser import chromium_page, wait_playing
    from support.publishers import stop_process

    with tempfile.TemporaryDirectory() as tmp:
        app = Livecast(server_config(Path(tmp), hls={"part_target_ms": 200}))
        await app.start()
        publisher = None
        try:
            demo = await ensure_demo(app.db, app.data_dir)
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, f"{app.rtmp_url}/{demo.stream_key}", str(seconds + warmup + 15),
                *map(str, (BITS, BLOCK, WIDTH, HEIGHT, FPS)), stdin=subprocess.DEVNULL,
            )
            async with chromium_page() as page:
                await page.goto(f"{app.public_url}/watch/{demo.room_id}")
                await wait_playing(page, timeout=40)
                await asyncio.sleep(warmup)
                samples = []
                loop = asyncio.get_running_loop()
                end = loop.time() + seconds
                while loop.time() < end:
                    latency = await page.evaluate(READER, [BITS, BLOCK])
                    if latency is not None and 0 <= latency < 60_000:
                        samples.append(latency)
                    await asyncio.sleep(0.1)
        finally:
            if publisher is not None:
                await stop_process(publisher)
            await app.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    args = parser.parse_args()
    samples = asyncio.run(measure(args.seconds, args.warmup))
    if not samples:
        sys.exit("no samples: the video never showed a readable clock")
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
    print(f"glass-to-glass ({WIDTH}x{HEIGHT} {FPS} fps, 1 s GOP, part target 200 ms), {len(samples)} samples over {args.seconds:.0f} s:")
    print(f"  median {statistics.median(samples):.0f} ms   p95 {p95:.0f} ms   min {samples[0]:.0f} ms   max {samples[-1]:.0f} ms")


if __name__ == "__main__":
    main()
