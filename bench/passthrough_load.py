"""Passthrough load: CPU per stream and RSS of the server process for N
concurrent streams, each ingested, packaged to LL-HLS (source rendition
only, transcode disabled) and served to one viewer.

The server is `livecast serve` in its own process (a config on free ports,
the lives seeded in its SQLite database first), so /proc/<pid>/stat and
statm measure it alone (thumbnails run in its threads, so they count); CPU
of any child processes is reported apart (none with transcode disabled). Publishers are `ffmpeg -re -i source.flv -c copy` processes
of a 720p30 2.5 Mbit/s H.264 + AAC file encoded once. Viewers run in this
process: one per stream, each doing blocking playlist reloads for the next
part (`_HLS_msn`/`_HLS_part`) and fetching every part, like an LL-HLS player.

"no gaps" means: from the first segment the viewer saw complete to the last,
every segment was listed complete and every one of its parts was fetched
with 200; "media s" is the smallest, over viewers, sum of EXTINF of the
segments they saw (the source lasts --seconds; the first GOP can be missed
while the viewer tunes in).

    .venv/bin/python bench/passthrough_load.py --streams 1 10 50 --seconds 20
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import m3u8  # noqa: E402

from storage.database import Database, sqlite_url  # noqa: E402
from storage.keys import key_digest  # noqa: E402
from storage.models import Live, Member, Producer, Room, utcnow  # noqa: E402
from bench.common import children_cpu_s, encode_720p_source, free_port, proc_cpu_s, proc_rss_mib  # noqa: E402

LIVECAST = Path(sys.executable).parent / "livecast"


async def seed(data_dir: Path, streams: int) -> list[tuple[str, str]]:
    """N rooms with a live each; returns (room_id, stream key)."""
    db = Database(sqlite_url(data_dir))
    await db.create_all()
    pairs = []
    async with db.session() as session, session.begin():
        member = Member(email="bench@livecast.local", password_hash="-", nickname="bench", email_verified_at=utcnow())
        session.add(member)
        await session.flush()
        for n in range(streams):
            room_id, key = f"bench{n}", f"benchkey{n:04d}" + "x" * 24
            session.add(Room(room_id=room_id, room_title=room_id))
            await session.flush()
            session.add(Producer(member_id=member.id, room_id=room_id))
            session.add(Live(room_id=room_id, live_key=key_digest(key)))
            pairs.append((room_id, key))
    await db.dispose()
    return pairs


@dataclass
class Viewer:
    parts_ok: set[str] = field(default_factory=set)
    errors: int = 0
    complete: dict[int, list[str]] = field(default_factory=dict)  # msn -> its parts, once listed complete
    durations: dict[int, float] = field(default_factory=dict)
    reloads: int = 0

    def gaps(self) -> int:
        if not self.complete:
            return 1
        msns = sorted(self.complete)
        missing = sum(1 for m in range(msns[0], msns[-1] + 1) if m not in self.complete)
        missing += sum(1 for ps in self.complete.values() for p in ps if p not in self.parts_ok)
        return missing


async def view(http: aiohttp.ClientSession, url: str, v: Viewer, deadline: float) -> None:
    base = url.rsplit("/", 1)[0]
    while time.monotonic() < deadline:
        async with http.get(url) as r:
            text = await r.text()
            if r.status == 200:
                break
        await asyncio.sleep(0.1)
    else:
        return
    while time.monotonic() < deadline:
        pl = m3u8.loads(text)
        v.reloads += 1
        skipped = (pl.skip.skipped_segments or 0) if pl.skip else 0
        last = (0, 0)
        for i, seg in enumerate(pl.segments):
            msn = pl.media_sequence + skipped + i
            for p in seg.parts:
                if p.uri not in v.parts_ok:
                    async with http.get(f"{base}/{p.uri}") as r:
                        await r.read()
                        if r.status == 200:
                            v.parts_ok.add(p.uri)
                        else:
                            v.errors += 1
            if seg.parts:
                last = (msn, len(seg.parts) - 1)
            if seg.uri and seg.parts and msn not in v.complete:
                v.complete[msn] = [p.uri for p in seg.parts]
                v.durations[msn] = seg.duration
        if pl.is_endlist:
            return
        async with http.get(f"{url}?_HLS_msn={last[0]}&_HLS_part={last[1] + 1}") as r:
            text = await r.text()
            if r.status != 200:
                v.errors += 1
                async with http.get(url) as r2:
                    text = await r2.text()


async def run(streams: int, source: Path, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        pairs = await seed(data_dir, streams)
        http_port, rtmp_port = free_port(), free_port()
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[server]\ndata_dir = "{data_dir}"\nlog_level = "warning"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
            f'[rtmp]\nhost = "127.0.0.1"\nport = {rtmp_port}\nmax_connections_per_address = {streams + 10}\n'
            f'[hls]\nend_grace_s = 2.0\n'
            f'[transcode]\nenabled = false\n'
        )
        log = open(Path(tmp) / "server.log", "wb")
        server = subprocess.Popen([str(LIVECAST), "serve", "--config", str(config)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        publishers: list[asyncio.subprocess.Process] = []
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                base = f"http://127.0.0.1:{http_port}"
                for _ in range(200):
                    try:
                        async with http.get(f"{base}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                rss_idle = proc_rss_mib(server.pid)
                deadline = time.monotonic() + seconds + 60
                viewers = [Viewer() for _ in pairs]
                tasks = [asyncio.create_task(view(http, f"{base}/live/{room}/source/index.m3u8", v, deadline))
                         for (room, _), v in zip(pairs, viewers)]
                cpu0, child0, t0 = proc_cpu_s(server.pid), children_cpu_s(server.pid), time.monotonic()
                publishers = [
                    await asyncio.create_subprocess_exec(
                        "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(source), "-c", "copy",
                        "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", stdin=subprocess.DEVNULL)
                    for _, key in pairs
                ]
                peak_rss = rss_idle
                while any(p.returncode is None for p in publishers):
                    peak_rss = max(peak_rss, proc_rss_mib(server.pid))
                    await asyncio.sleep(0.5)
                cpu, elapsed = proc_cpu_s(server.pid) - cpu0, time.monotonic() - t0
                child_cpu = children_cpu_s(server.pid) - child0
                failed = sum(p.returncode != 0 for p in publishers)
                await asyncio.wait_for(asyncio.gather(*tasks), 60)  # ENDLIST after end_grace_s
        finally:
            for p in publishers:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    gaps = [v.gaps() for v in viewers]
    return {
        "streams": streams,
        "cpu_pct_per_stream": 100 * cpu / elapsed / streams,
        "cpu_pct_total": 100 * cpu / elapsed,
        "child_cpu_pct": 100 * child_cpu / elapsed,
        "rss_idle_mib": rss_idle,
        "rss_peak_mib": peak_rss,
        "no_gaps": f"{sum(g == 0 for g in gaps)}/{streams}",
        "errors": sum(v.errors for v in viewers),
        "media_s": min(sum(v.durations.values()) for v in viewers),
        "parts": min(len(v.parts_ok) for v in viewers),
        "publisher_failures": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.flv"
        encode_720p_source(source, args.seconds)
        print(f"source: 1280x720 30 fps H.264 2.5 Mbit/s (2 s GOP) + AAC 128k, {args.seconds} s; "
              f"part target 250 ms; {os.cpu_count()} CPUs")
        print(f"{'streams':>7} {'cpu%/stream':>11} {'cpu% total':>10} {'child cpu%':>10} {'rss idle MiB':>12} "
              f"{'rss peak MiB':>12} {'no gaps':>8} {'errors':>6} {'min parts':>9} {'min media s':>11}")
        for n in args.streams:
            r = asyncio.run(run(n, source, args.seconds))
            print(f"{r['streams']:>7} {r['cpu_pct_per_stream']:>11.2f} {r['cpu_pct_total']:>10.1f} "
                  f"{r['child_cpu_pct']:>10.1f} {r['rss_idle_mib']:>12.1f} {r['rss_peak_mib']:>12.1f} "
                  f"{r['no_gaps']:>8} {r['errors']:>6} {r['parts']:>9} {r['media_s']:>11.1f}"
                  + (f"  ({r['publisher_failures']} publishers failed)" if r['publisher_failures'] else ""),
                  flush=True)


if __name__ == "__main__":
    main()
