"""The `livecast` command as a user runs it."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys

import aiohttp
import pytest

from support.publishers import start_ffmpeg, stop_process

LIVECAST = [sys.executable, "-m", "livecast.cli"]


def test_demo_prints_the_contract_json_and_is_idempotent(tmp_path):
    run = lambda: subprocess.run(  # noqa: E731
        [*LIVECAST, "demo", "--data-dir", str(tmp_path), "--http-port", "8090"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info == json.loads(second.stdout)
    assert info["room_id"] == "demo"
    assert info["rtmp_url"] == "rtmp://127.0.0.1:1935/live"
    assert info["playlist_url"] == "http://127.0.0.1:8090/live/demo/master.m3u8"
    assert info["watch_url"] == "http://127.0.0.1:8090/watch/demo"
    assert len(info["stream_key"]) >= 32


def test_bad_config_stops_start_up_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[rtmp]\nport = 99999\n")
    result = subprocess.run([*LIVECAST, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "rtmp.port" in result.stderr


@pytest.mark.slow
async def test_serve_demo_prints_how_to_stream_and_watch_then_serves_it(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        *LIVECAST, "serve", "--demo", "--data-dir", str(tmp_path), "--rtmp-port", "0", "--http-port", "0",
        env={"LIVECAST_HTTP_HOST": "127.0.0.1", "LIVECAST_RTMP_HOST": "127.0.0.1", "LIVECAST_TRANSCODE_ENABLED": "false",
             "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    publisher = None
    try:
        text = ""
        while "Playlist:" not in text:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "serve exited before printing the instructions"
            text += line.decode()
        server = re.search(r"Server:\s+(rtmp://\S+)", text).group(1)
        key = re.search(r"Stream Key:\s+(\S+)", text).group(1)
        watch = re.search(r"Watch:\s+(http://\S+)", text).group(1)
        playlist = re.search(r"Playlist:\s+(http://\S+)", text).group(1)
        assert watch.endswith("/watch/demo") and ":0/" not in watch and ":0/" not in server
        publisher = await start_ffmpeg(f"{server}/{key}", seconds=30)
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(playlist) as r:
                    if r.status == 200:
                        assert "#EXT-X-STREAM-INF" in await r.text()
                        break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the playlist never appeared")
            async with http.get(watch) as r:
                assert r.status == 200
    finally:
        if publisher is not None:
            await stop_process(publisher)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
