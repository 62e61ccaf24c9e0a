"""Memory of idle RTMP connections: N clients connect and send nothing.

The ingest runs in its own process (handshake deadline raised so the
clients stay for the measurement); its RSS is read before and after the N
connections are open, after a warm-up of 20 connections.

    .venv/bin/python bench/idle_connections.py --connections 1000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import proc_rss_mib  # noqa: E402

SERVER = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from ingest.limits import IngestLimits
from ingest.registry import StreamRegistry
from ingest.server import RtmpServer

class Nobody:
    async def authorize(self, app, key, remote): raise AssertionError("no publish expected")
    async def update(self, grant, info): pass
    async def ended(self, grant, *, bytes_received, reason): pass

async def main():
    limits = IngestLimits(handshake_timeout=120.0, max_connections=10_000, max_connections_per_address=10_000)
    server = RtmpServer(Nobody(), StreamRegistry(), limits=limits)
    await server.start("127.0.0.1", 0)
    print(json.dumps({"port": server.port}), flush=True)
    loop = asyncio.get_running_loop()
    while (line := await loop.run_in_executor(None, sys.stdin.readline)):
        print(json.dumps({"connections": server.connection_count}), flush=True)
    await server.stop()

asyncio.run(main())
"""


async def measure(connections: int) -> tuple[float, float, int]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        port = json.loads(await server.stdout.readline())["port"]

        async def count() -> int:
            server.stdin.write(b"\n")
            await server.stdin.drain()
            return json.loads(await server.stdout.readline())["connections"]

        async def open_all(n: int) -> list:
            writers = []
            for _ in range(n):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writers.append(writer)
            while await count() != n:
                await asyncio.sleep(0.05)
            return writers

        for writer in await open_all(20):  # warm up allocator and code paths
            writer.close()
        while await count() != 0:
            await asyncio.sleep(0.05)
        before = proc_rss_mib(server.pid)
        writers = await open_all(connections)
        after = proc_rss_mib(server.pid)
        held = await count()
        for writer in writers:
            writer.close()
        return before, after, held
    finally:
        server.kill()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    before, after, held = asyncio.run(measure(args.connections))
    print(f"{held} idle connections held: RSS {before:.1f} MiB -> {after:.1f} MiB, "
          f"{(after - before) * 1024 / args.connections:.1f} KiB per connection")


if __name__ == "__main__":
    main()
