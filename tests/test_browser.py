"""A real browser plays a live: headless Chromium + hls.js on /watch/<room>."""
from __future__ import annotations

import asyncio

import pytest

from support.browser import chromium_page, video_state, wait_playing
from support.publishers import start_ffmpeg, stop_process

from conftest import rtmp_url

pytestmark = pytest.mark.slow


async def on_air(server, room_id: str, pred, timeout: float = 30) -> dict:
    """The room's stream once `pred` holds for it (the server's own listing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        streams = [s for s in server.streams() if s["room_id"] == room_id]
        if streams and pred(streams[0]):
            return streams[0]
        assert loop.time() < deadline, streams
        await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_watch_page_plays_and_survives_a_reconnect(server, live):
    _, room_id, key = live
    publisher = await start_ffmpeg(rtmp_url(server, key), seconds=60, gop=30)
    try:
        async with chromium_page() as page:
            await page.goto(f"{server.public_url}/watch/{room_id}")
            assert await page.title() == "Demo room · livecast"
            first = await wait_playing(page)
            assert (first["w"], first["h"]) == (320, 240)
            assert first["state"] == "live"
            # The publisher drops and comes back within the grace period.
            (first_session,) = [s["session_id"] for s in server.streams() if s["room_id"] == room_id]
            await stop_process(publisher)
            publisher = await start_ffmpeg(rtmp_url(server, key), seconds=60, gop=30)
            await on_air(server, room_id, lambda s: s["session_id"] != first_session and s["uptime_s"] >= 1.0)
            before = await video_state(page)
            after = await wait_playing(page, beyond=before["t"], timeout=40)
            assert after["t"] > before["t"] + 1.0
    finally:
        await stop_process(publisher)


async def test_unknown_room_has_no_watch_page(server):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.public_url}/watch/nope") as response:
            assert response.status == 404
