"""Ingest-to-playlist latency: for each video frame, the time from the moment
the server reads it (its Frame is published on the StreamHub) to the moment
a blocking playlist request (`_HLS_msn`/`_HLS_part`, as a LL-HLS player
makes them) returns a playlist listing the part that holds it.

The server (a whole Livecast: RTMP ingest, packager, origin) runs in this
process so both instants come from the same time.monotonic(): the hub's
publish() is wrapped from a registry listener, no server code is changed.
The player runs in the same event loop. The publisher is `ffmpeg -re -c
copy` of a file encoded once (640x360, 30 fps, 1 s GOP), so no encoder
competes for the CPU. Frames are matched to parts by the decode times in
each part's video `tfdt`/`trun` (the part is fetched like a player would).

Goal: median below part target + 50 ms.

    .venv/bin/python bench/ingest_to_playlist.py --part-targets 200 250 --seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import m3u8  # noqa: E402

from ingest.frames import VIDEO, Frame  # noqa: E402
from livecast.app import Livecast  # noqa: E402
from storage.demo import ensure_demo  # noqa: E402
from transcoder.mp4box import iter_boxes  # noqa: E402

from conftest import server_config  # noqa: E402

VIDEO_TRACK_ID = 1  # transcoder/packager.py


def encode_source(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "1000k", "-g", "30",
         "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
         "-f", "flv", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )


def video_decode_times(part: bytes) -> list[int]:
    """90 kHz decode times of the video samples of one fMP4 fragment."""
    for kind, start, end in iter_boxes(part):
        if kind != b"moof":
            continue
        for kind2, s2, e2 in iter_boxes(part, start, end):
            if kind2 != b"traf":
                continue
            track, base, durations = None, 0, []
            for kind3, s3, _e3 in iter_boxes(part, s2, e2):
                if kind3 == b"tfhd":
                    (track,) = struct.unpack_from(">I", part, s3 + 4)
                elif kind3 == b"tfdt":
                    base = struct.unpack_from(">Q" if part[s3] == 1 else ">I", part, s3 + 4)[0]
                elif kind3 == b"trun":
                    flags = int.from_bytes(part[s3 + 1:s3 + 4], "big")
                    (count,) = struct.unpack_from(">I", part, s3 + 4)
                    pos = s3 + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
                    for _ in range(count):
                        durations.append(struct.unpack_from(">I", part, pos)[0] if flags & 0x100 else 0)
                        pos += 4 * len(fields)
            if track == VIDEO_TRACK_ID:
                times, t = [], base
                for d in durations:
                    times.append(t)
                    t += d
                return times
    return []


def last_part(pl: m3u8.M3U8) -> tuple[int, int]:
    skipped = (pl.skip.skipped_segments or 0) if pl.skip else 0
    for i in range(len(pl.segments) - 1, -1, -1):
        if pl.segments[i].parts:
            return pl.media_sequence + skipped + i, len(pl.segments[i].parts) - 1
    raise RuntimeError("no part listed")


async def player(http: aiohttp.ClientSession, url: str, listed_at: dict[str, float],
                 parts: dict[str, bytes], stop: asyncio.Event) -> int:
    """Blocking reloads for the next part; every new part fetched. Returns reloads."""
    base = url.rsplit("/", 1)[0]
    fetches: list[asyncio.Task] = []

    async def fetch(uri: str) -> None:
        async with http.get(f"{base}/{uri}") as r:
            if r.status == 200:
                parts[uri] = await r.read()

    while not stop.is_set():
        async with http.get(url) as r:
            text = await r.text()
            if r.status == 200:
                break
        await asyncio.sleep(0.02)
    reloads = 0
    while not stop.is_set():
        now = time.monotonic()
        pl = m3u8.loads(text)
        reloads += 1
        for seg in pl.segments:
            for p in seg.parts:
                if p.uri not in listed_at:
                    listed_at[p.uri] = now
                    fetches.append(asyncio.create_task(fetch(p.uri)))
        if pl.is_endlist:
            break
        msn, part = last_part(pl)
        async with http.get(f"{url}?_HLS_msn={msn}&_HLS_part={part + 1}") as r:
            text = await r.text()
            if r.status != 200:
                async with http.get(url) as r2:
                    text = await r2.text()
    await asyncio.gather(*fetches)
    return reloads


async def measure(source: Path, part_target_ms: int, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = server_config(Path(tmp) / "data", hls={"part_target_ms": part_target_ms, "end_grace_s": 1.0})
        app = Livecast(config)
        ingest_times: list[tuple[int, float]] = []  # (frame dts ms, monotonic)

        def hook(hub) -> None:
            publish = hub.publish

            def timed_publish(item):
                if isinstance(item, Frame) and item.kind == VIDEO:
                    ingest_times.append((item.dts, time.monotonic()))
                publish(item)
            hub.publish = timed_publish

        app.registry.add_listener(hook)  # after the packager's listener: same hub
        await app.start()
        try:
            demo = await ensure_demo(app.db, app.data_dir)
            url = f"{app.public_url}/live/{demo.room_id}/source/index.m3u8"
            listed_at: dict[str, float] = {}
            parts: dict[str, bytes] = {}
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as http:
                watcher = asyncio.create_task(player(http, url, listed_at, parts, stop))
                proc = await asyncio.create_subprocess_exec(
                    "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(source), "-t", str(seconds),
                    "-c", "copy", "-f", "flv", f"{app.rtmp_url}/{demo.stream_key}",
                    stdin=subprocess.DEVNULL)
                await proc.wait()
                reloads = await asyncio.wait_for(watcher, 30)  # ends at ENDLIST (end_grace_s=1)
        finally:
            stop.set()
            await app.stop()
    # The packager's first video frame is the first keyframe = 90 kHz time 0.
    first_ms = ingest_times[0][0]
    ingested = {(ms - first_ms) * 90: t for ms, t in ingest_times}
    latencies = []
    for uri, data in parts.items():
        for dts in video_decode_times(data):
            if dts in ingested:
                latencies.append(listed_at[uri] - ingested[dts])
    latencies.sort()
    ms = [1000 * x for x in latencies]
    return {
        "part_target_ms": part_target_ms,
        "frames": f"{len(ms)}/{len(ingest_times)}",
        "reloads": reloads,
        "median": statistics.median(ms),
        "p95": ms[int(0.95 * (len(ms) - 1))],
        "max": ms[-1],
        "min": ms[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part-targets", type=int, nargs="+", default=[200, 250])
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.flv"
        encode_source(source, args.seconds)
        print(f"source: 640x360 30 fps H.264 1 Mbit/s, 1 s GOP + AAC, {args.seconds} s, published with ffmpeg -re -c copy")
        print(f"{'part target':>11} {'frames':>11} {'reloads':>7} {'min ms':>7} {'median ms':>9} {'p95 ms':>7} "
              f"{'max ms':>7} {'goal ms':>7}")
        for target in args.part_targets:
            r = asyncio.run(measure(source, target, args.seconds))
            goal = target + 50
            print(f"{target:>11} {r['frames']:>11} {r['reloads']:>7} {r['min']:>7.1f} {r['median']:>9.1f} "
                  f"{r['p95']:>7.1f} {r['max']:>7.1f} {goal:>5} {'ok' if r['median'] < goal else 'MISSED'}")


if __name__ == "__main__":
    main()
