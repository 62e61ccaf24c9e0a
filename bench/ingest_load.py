"""Ingest benchmark: N concurrent real-time publishers of a 720p30
2.5 Mbit/s H.264/AAC stream into one ingest process.

Reports the ingest process's CPU per stream and its RSS, and checks every
stream's frames arrived complete (frames counted in the hub == frames in the
source file). The source is encoded once; the publishers are `ffmpeg -re
-c copy` processes, so the machine's cores go to the server, not to encoding.

    .venv/bin/python bench/ingest_load.py --streams 1 10 50 --seconds 20
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import encode_720p_source, proc_cpu_s, proc_rss_mib  # noqa: E402


SERVER = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from dataclasses import dataclass
from ingest.registry import StreamRegistry
from ingest.limits import IngestLimits
from ingest.server import RtmpServer, PublishRefused
from ingest.frames import Frame

@dataclass(frozen=True)
class Grant:
    live_id: int
    room_id: str

class Authority:
    async def authorize(self, app, key, remote):
        if not key.startswith("bench-"):
            raise PublishRefused("unknown key")
        n = int(key[6:])
        return Grant(n, f"room{n}")
    async def update(self, grant, info): pass
    async def ended(self, grant, *, bytes_received, reason): pass

counts = {}

async def count(hub):
    consumer = hub.subscribe("bench", max_items=100_000, max_bytes=1 << 30)
    n = 0
    while (item := await consumer.get()) is not None:
        if isinstance(item, Frame):
            n += 1
            counts[hub.live_id] = n

async def main():
    registry = StreamRegistry(end_grace_s=1.0)
    registry.add_listener(lambda hub: asyncio.get_running_loop().create_task(count(hub)))
    # Every publisher comes from 127.0.0.1: lift the per-address limit (32).
    server = RtmpServer(Authority(), registry, limits=IngestLimits(max_connections_per_address=1000))
    await server.start("127.0.0.1", 0)
    print(json.dumps({"port": server.port}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"counts": counts}), flush=True)
    await server.stop()
    await registry.close()

asyncio.run(main())
"""


def run(streams: int, source: Path, frames: int) -> dict:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        rss_idle = proc_rss_mib(server.pid)
        cpu0, t0 = proc_cpu_s(server.pid), time.monotonic()
        publishers = [
            subprocess.Popen(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(source), "-c", "copy", "-f", "flv",
                 f"rtmp://127.0.0.1:{port}/live/bench-{n}"],
                stdin=subprocess.DEVNULL,
            )
            for n in range(streams)
        ]
        peak_rss = rss_idle
        while any(p.poll() is None for p in publishers):
            peak_rss = max(peak_rss, proc_rss_mib(server.pid))
            time.sleep(0.5)
        cpu, elapsed = proc_cpu_s(server.pid) - cpu0, time.monotonic() - t0
        failed = sum(p.returncode != 0 for p in publishers)
        time.sleep(0.5)
        server.stdin.write("\n")
        server.stdin.flush()
        counts = json.loads(server.stdout.readline())["counts"]
    finally:
        server.kill()
        server.wait()
    complete = sum(1 for n in range(streams) if counts.get(str(n)) == frames)
    return {
        "streams": streams,
        "cpu_pct_per_stream": round(100 * cpu / elapsed / streams, 2),
        "cpu_pct_total": round(100 * cpu / elapsed, 1),
        "rss_idle_mib": round(rss_idle, 1),
        "rss_peak_mib": round(peak_rss, 1),
        "complete": f"{complete}/{streams}",
        "publisher_failures": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.flv"
        frames = encode_720p_source(source, args.seconds)
        print(f"source: 1280x720 30 fps H.264 2.5 Mbit/s + AAC, {args.seconds} s, {frames} frames")
        print(f"{'streams':>7} {'cpu%/stream':>11} {'cpu% total':>10} {'rss idle MiB':>12} {'rss peak MiB':>12} {'complete':>9}")
        for n in args.streams:
            r = run(n, source, frames)
            print(f"{r['streams']:>7} {r['cpu_pct_per_stream']:>11} {r['cpu_pct_total']:>10} {r['rss_idle_mib']:>12} "
                  f"{r['rss_peak_mib']:>12} {r['complete']:>9}")


if __name__ == "__main__":
    main()
