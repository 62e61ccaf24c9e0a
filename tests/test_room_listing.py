"""The public room listing reflects what the origin sees: live state,
viewers that fetch the playlists, and the thumbnail."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from support.publishers import start_ffmpeg, stop_process

from conftest import rtmp_url

pytestmark = pytest.mark.slow


async def listing(http, server, room_id):
    async with http.get(f"{server.public_url}/api/v1/rooms/{room_id}") as r:
        assert r.status == 200
        return await r.json()


@pytest.mark.server_config(transcode={"thumbnail_interval_s": 1.0})
async def test_listing_counts_viewers_and_links_the_thumbnail(server, live):
    _, room_id, key = live
    publisher = await start_ffmpeg(rtmp_url(server, key), seconds=30)
    try:
        async with aiohttp.ClientSession() as http:
            media = f"{server.public_url}/live/{room_id}/source/index.m3u8"
            for _ in range(100):
                room = await listing(http, server, room_id)
                if room["live"] and room["thumbnail_url"]:
                    break
                await asyncio.sleep(0.1)
            assert room["live"] is True and room["viewer_count"] == 0
            assert room["thumbnail_url"] == f"{server.public_url}/live/{room_id}/thumbnail.jpg"
            async with http.get(room["thumbnail_url"]) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                assert (await r.read())[:2] == b"\xff\xd8"
            # One viewer (one address) fetching the playlist, however often.
            for _ in range(3):
                async with http.get(media) as r:
                    assert r.status == 200
            assert (await listing(http, server, room_id))["viewer_count"] == 1
    finally:
        await stop_process(publisher)
