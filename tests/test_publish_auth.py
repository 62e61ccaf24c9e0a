"""Publishing against the real database: stream keys, live states and the
broadcasts history, with the ffmpeg CLI as the encoder."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update

from livecast.app import Livecast
from storage.models import Broadcast, Live, Member, Producer
from support.publishers import ffmpeg_publish, start_ffmpeg, stop_process

from conftest import rtmp_url, server_config

pytestmark = pytest.mark.slow


async def live_state(server, live_id):
    async with server.db.session() as session:
        return (await session.get(Live, live_id)).live_state


async def broadcasts(server, live_id):
    async with server.db.session() as session:
        rows = await session.execute(select(Broadcast).where(Broadcast.live_id == live_id).order_by(Broadcast.id))
        return rows.scalars().all()


async def wait_for(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_publish_goes_live_and_records_the_broadcast(server, live):
    live_id, room_id, key = live
    proc = await start_ffmpeg(rtmp_url(server, key), seconds=3)
    try:
        assert await wait_for(lambda: _is(server, live_id, "live"))
        assert [s["live_id"] for s in server.registry.streams()] == [live_id]
        assert await proc.wait() == 0
    finally:
        await stop_process(proc)
    assert await wait_for(lambda: _is(server, live_id, "idle"))
    (row,) = await broadcasts(server, live_id)
    assert row.ended_at is not None
    assert row.bytes_received > 10_000
    assert row.video_codec == "h264" and row.audio_codec == "aac"
    assert row.encoder and "Lavf" in row.encoder
    assert row.remote_address.startswith("127.0.0.1")


async def _is(server, live_id, state):
    return await live_state(server, live_id) == state


async def test_wrong_key_is_refused_and_opens_no_broadcast(server, live):
    live_id, _, key = live
    code, err = await ffmpeg_publish(rtmp_url(server, key + "nope"), seconds=1, realtime=False)
    assert code != 0
    assert await broadcasts(server, live_id) == []
    assert await live_state(server, live_id) == "idle"


async def test_blocked_live_is_refused(server, live):
    live_id, _, key = live
    async with server.db.session() as session, session.begin():
        await session.execute(update(Live).where(Live.live_id == live_id).values(live_state="blocked"))
    code, _ = await ffmpeg_publish(rtmp_url(server, key), seconds=1, realtime=False)
    assert code != 0
    assert await broadcasts(server, live_id) == []
    assert await live_state(server, live_id) == "blocked"


async def test_suspended_producer_cannot_publish(server, live):
    live_id, room_id, key = live
    async with server.db.session() as session, session.begin():
        member_ids = select(Producer.member_id).where(Producer.room_id == room_id)
        await session.execute(update(Member).where(Member.id.in_(member_ids)).values(suspended=True))
    code, _ = await ffmpeg_publish(rtmp_url(server, key), seconds=1, realtime=False)
    assert code != 0
    assert await broadcasts(server, live_id) == []


async def test_drop_ends_the_publish_within_a_second(server, live):
    live_id, _, key = live
    proc = await start_ffmpeg(rtmp_url(server, key), seconds=30)
    try:
        assert await wait_for(lambda: _is(server, live_id, "live"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert server.registry.drop(live_id, "blocked by test")
        await asyncio.wait_for(proc.wait(), 10)
        # The encoder ends because the server cut it (the end reason below
        # says so): the 1 s the issue asks for, plus slack for a loaded machine.
        assert loop.time() - started < 1.0 + 2.0
    finally:
        await stop_process(proc)
    assert await wait_for(lambda: _is(server, live_id, "idle"))
    (row,) = await broadcasts(server, live_id)
    assert row.end_reason == "blocked by test"


async def test_takeover_keeps_the_live_on_air(server, live):
    live_id, _, key = live
    first = await start_ffmpeg(rtmp_url(server, key), seconds=30)
    second = None
    try:
        assert await wait_for(lambda: _is(server, live_id, "live"))
        second = await start_ffmpeg(rtmp_url(server, key), seconds=30)
        # The stale publisher is dropped; the new one stays on air.
        await asyncio.wait_for(first.wait(), 10)
        assert await wait_for(lambda: _count(server, live_id, 2))
        await asyncio.sleep(0.5)
        assert await live_state(server, live_id) == "live"
        assert second.returncode is None
        rows = await broadcasts(server, live_id)
        assert rows[0].ended_at is not None and rows[0].end_reason == "takeover"
        assert rows[1].ended_at is None
    finally:
        await stop_process(first)
        if second is not None:
            await stop_process(second)


async def _count(server, live_id, n):
    return len(await broadcasts(server, live_id)) == n


async def test_restart_resets_a_live_left_on_air_by_a_crash(tmp_path):
    config = server_config(tmp_path / "data")
    first = Livecast(config)
    await first.start()
    from storage.demo import ensure_demo

    demo = await ensure_demo(first.db, first.data_dir)
    async with first.db.session() as session, session.begin():
        await session.execute(update(Live).where(Live.live_id == demo.live_id).values(live_state="live"))
        session.add(Broadcast(live_id=demo.live_id, remote_address="127.0.0.1"))
    await first.stop()  # as if the process had died with the live on air
    second = Livecast(config)
    await second.start()
    try:
        assert await live_state(second, demo.live_id) == "idle"
        (row,) = await broadcasts(second, demo.live_id)
        assert row.ended_at is not None and row.end_reason == "server restart"
    finally:
        await second.stop()


async def refusal_status(server, key: str) -> tuple[dict | None, bool]:
    """Publish with our RTMP test client: the onStatus answer, and whether the
    server then closed the connection."""
    from support.rtmp_client import RtmpTestClient

    client = RtmpTestClient("127.0.0.1", server.rtmp_port)
    try:
        status = await client.start_publish(key)
        return status, await client.wait_closed(5)
    finally:
        await client.close()


@pytest.mark.parametrize("case", ["unknown key", "blocked", "suspended producer"])
async def test_refusals_answer_bad_name_and_close(server, live, case):
    live_id, room_id, key = live
    async with server.db.session() as session, session.begin():
        if case == "blocked":
            await session.execute(update(Live).where(Live.live_id == live_id).values(live_state="blocked"))
        elif case == "suspended producer":
            member_ids = select(Producer.member_id).where(Producer.room_id == room_id)
            await session.execute(update(Member).where(Member.id.in_(member_ids)).values(suspended=True))
    status, closed = await refusal_status(server, key + "x" if case == "unknown key" else key)
    assert status is not None and status["code"] == "NetStream.Publish.BadName", status
    assert status["level"] == "error"
    assert closed
    assert await broadcasts(server, live_id) == []
