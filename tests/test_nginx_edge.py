"""configs/nginx-edge.conf in front of a real origin: many viewers' identical
blocking playlist reloads reach the origin once."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from support.publishers import start_ffmpeg, stop_process

from conftest import rtmp_url

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "nginx-edge.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_nginx(tmp_path: Path, origin_port: int) -> tuple[asyncio.subprocess.Process, int]:
    # nginx cannot listen on port 0 and say which port it got: take a free
    # port from the OS, and try again should another process grab it first.
    for _attempt in range(3):
        port = free_port()
        text = CONFIG.read_text()
        for placeholder, value in {
            "PID_FILE": str(tmp_path / "nginx.pid"),
            "ERROR_LOG": str(tmp_path / "nginx-error.log"),
            "CACHE_DIR": str(tmp_path / "cache"),
            "ORIGIN": f"127.0.0.1:{origin_port}",
            "LISTEN": f"127.0.0.1:{port}",
        }.items():
            text = text.replace(placeholder, value)
        conf = tmp_path / "nginx.conf"
        conf.write_text(text)
        # Run in the foreground; as root, the workers must be able to write the
        # cache under the test's private tmp dir.
        globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        proc = await asyncio.create_subprocess_exec(
            "nginx", "-e", str(tmp_path / "nginx-error.log"), "-p", str(tmp_path), "-c", str(conf), "-g", globals_,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while proc.returncode is None and loop.time() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
            except OSError:
                await asyncio.sleep(0.05)
                continue
            if proc.returncode is None:  # ours, not another process on that port
                return proc, port
        await stop_process(proc)
        log = (tmp_path / "nginx-error.log").read_text() if (tmp_path / "nginx-error.log").exists() else ""
        if "Address already in use" not in log:
            raise AssertionError("nginx did not start: " + log)
    raise AssertionError("nginx found no free port")


async def test_blocking_reload_through_the_edge_reaches_the_origin_once(server, live, tmp_path):
    _, room_id, key = live
    publisher = await start_ffmpeg(rtmp_url(server, key), seconds=30)
    nginx, port = await start_nginx(tmp_path, server.http_port)
    try:
        edge = f"http://127.0.0.1:{port}/live/{room_id}/source/index.m3u8"
        async with aiohttp.ClientSession() as http:
            playlist = ""
            for _ in range(100):
                async with http.get(f"{server.public_url}/live/{room_id}/source/index.m3u8") as r:
                    playlist = await r.text()
                    if r.status == 200 and "#EXT-X-PART:" in playlist:
                        break
                await asyncio.sleep(0.1)
            hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[^"]*?(\d+)\.(\d+)\.m4s"', playlist)
            assert hint, playlist
            msn, part = int(hint.group(1)), int(hint.group(2))
            # Ask for the hinted part: not written yet, so every viewer waits.
            url = f"{edge}?_HLS_msn={msn}&_HLS_part={part}"

            async def viewer():
                async with http.get(url) as r:
                    return r.status, r.headers.get("X-Cache-Status"), await r.text()

            results = await asyncio.gather(*(viewer() for _ in range(20)))
        statuses = [status for status, _, _ in results]
        cache = [c for _, c, _ in results]
        assert statuses == [200] * 20, results[0]
        assert cache.count("MISS") == 1, cache
        assert len({body for _, _, body in results}) == 1
    finally:
        await stop_process(nginx)
        await stop_process(publisher)
