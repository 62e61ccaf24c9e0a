"""Viewers through publisher chaos: a few player-like clients (blocking
playlist reloads, every listed part fetched, the preload-hinted part fetched
ahead as an LL-HLS player does) watch one room while its publisher
unpublishes cleanly, is terminated and is killed, each time coming back
within hls.end_grace_s, then stops for good.

Rules checked (draft-pantos-hls-rfc8216bis §6.2.1, §6.2.2, §6.2.6;
shared/reference/ll-hls.md §2, §4): the media sequence and the newest part
never go back; the same playlist continues after an EXT-X-DISCONTINUITY;
the only errors are 404s for a preload-hinted part that was never made
(the publisher left before it; §6.2.6 allows it) and the playlist ends with
EXT-X-ENDLIST once the grace is over.
"""
from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

import aiohttp
import m3u8
import pytest

from support.publishers import start_ffmpeg, stop_process

from conftest import rtmp_url

pytestmark = pytest.mark.slow

GRACE_S = 3.0
VIEWERS = 3


@dataclass
class Viewer:
    name: str
    sequences: list[tuple[int, int, int]] = field(default_factory=list)  # (media sequence, last msn, last part)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (status, uri)
    hinted_404: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    fetched: int = 0
    discontinuities: int = 0
    ended_at: float | None = None
    final: str = ""


def msn_of(pl: m3u8.M3U8, index: int) -> int:
    return pl.media_sequence + ((pl.skip.skipped_segments or 0) if pl.skip else 0) + index


def last_part(pl: m3u8.M3U8) -> tuple[int, int]:
    for i in range(len(pl.segments) - 1, -1, -1):
        if pl.segments[i].parts:
            return msn_of(pl, i), len(pl.segments[i].parts) - 1
    raise AssertionError("no part listed")


async def watch(http: aiohttp.ClientSession, url: str, v: Viewer, *, timeout: float = 60) -> None:
    base = url.rsplit("/", 1)[0]
    deadline = time.monotonic() + timeout
    hints: dict[str, asyncio.Task] = {}

    async def get_file(uri: str, hinted: bool) -> None:
        async with http.get(f"{base}/{uri}") as r:
            await r.read()
            if r.status == 404 and hinted:
                v.hinted_404.add(uri)
            elif r.status != 200:
                v.errors.append((r.status, uri))
            else:
                v.fetched += 1

    while True:
        async with http.get(url) as r:
            text = await r.text()
            if r.status == 200:
                break
            assert r.status == 404, (r.status, text)
        assert time.monotonic() < deadline, "the playlist never appeared"
        await asyncio.sleep(0.05)
    try:
        while True:
            pl = m3u8.loads(text)
            msn, part = last_part(pl)
            v.sequences.append((pl.media_sequence, msn, part))
            v.discontinuities = max(v.discontinuities, text.count("#EXT-X-DISCONTINUITY\n"))
            new = [p.uri for s in pl.segments for p in s.parts if p.uri not in v.listed]
            v.listed.update(p.uri for s in pl.segments for p in s.parts)
            for uri in new:
                if uri not in hints:
                    await get_file(uri, hinted=False)
            if pl.is_endlist:
                v.ended_at = time.monotonic()
                v.final = text
                return
            hint = pl.preload_hint.uri
            if hint not in hints and hint not in v.listed:
                hints[hint] = asyncio.create_task(get_file(hint, hinted=True))
            assert time.monotonic() < deadline, "no ENDLIST in time"
            async with http.get(f"{url}?_HLS_msn={msn}&_HLS_part={part + 1}") as r:
                text = await r.text()
                if r.status != 200:
                    v.errors.append((r.status, "index.m3u8"))
                    async with http.get(url) as r2:  # recover like a player
                        text = await r2.text()
    finally:
        await asyncio.gather(*hints.values(), return_exceptions=True)


async def publish_for(url: str, seconds: float, how: str) -> float:
    """Publish, then leave the way `how` says; returns when the publisher is gone."""
    if how == "clean":
        proc = await start_ffmpeg(url, seconds=seconds, gop=30)
        assert await asyncio.wait_for(proc.wait(), seconds + 10) == 0
        return time.monotonic()
    proc = await start_ffmpeg(url, seconds=60, gop=30)
    try:
        await asyncio.sleep(seconds)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM if how == "terminate" else signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 5)
    finally:
        await stop_process(proc)
    return time.monotonic()


@pytest.mark.server_config(hls={"end_grace_s": GRACE_S})
async def test_viewers_survive_republishes_and_see_one_continuous_playlist(server, live):
    _, room_id, key = live
    url = f"{server.public_url}/live/{room_id}/source/index.m3u8"
    viewers = [Viewer(f"v{i}") for i in range(VIEWERS)]
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(watch(http, url, v)) for v in viewers]
        try:
            for how in ("clean", "terminate", "kill"):
                left = await publish_for(rtmp_url(server, key), 2.5, how)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    for v in viewers:
        assert v.errors == [], (v.name, v.errors)
        # Hinted parts the publisher never made: 404, and never listed later.
        assert not (v.hinted_404 & v.listed), v.hinted_404 & v.listed
        assert len(v.sequences) > 20 and v.fetched > 20
        seqs = [s[0] for s in v.sequences]
        assert seqs == sorted(seqs), "media sequence went back"
        newest = [s[1:] for s in v.sequences]
        assert newest == sorted(newest), "the newest part went back"
        # Two reconnects within the grace: the same playlist, two discontinuities.
        assert v.discontinuities == 2
        final = m3u8.loads(v.final)
        assert final.is_endlist
        msns = [msn_of(final, i) for i in range(len(final.segments))]
        assert msns == list(range(msns[0], msns[0] + len(msns)))
        assert [s.discontinuity for s in final.segments].count(True) == 2
        # ENDLIST only once the grace after the last publisher is over.
        assert GRACE_S - 0.5 < v.ended_at - left < GRACE_S + 3
