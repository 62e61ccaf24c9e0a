"""Stream keys and moderation against the real server and a real encoder:
rotating the key drops the publisher using the old one, suspending its
producer drops it and refuses the next publish, and through all of it no
stream key appears in any log record (every logger, DEBUG) nor in any HTTP
answer other than the creation and rotation answers to the producer."""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from control_api import create_admin
from storage.models import Live, LiveBlock, Member, utcnow
from support.api import PASSWORD, cached_hash
from support.publishers import ffmpeg_publish, start_ffmpeg, stop_process

pytestmark = pytest.mark.slow


class Client:
    """Records every answer, so the test can look for keys in all of them."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.answers: list[tuple[str, str, str]] = []   # (method, path, body + headers)

    async def call(self, method: str, path: str, token: str | None = None, json=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, json=json, headers=headers) as r:
            text = await r.text()
            self.answers.append((method, path, text + repr(dict(r.headers))))
            return r.status, (await r.json(content_type=None) if text.startswith("{") else text)


async def wait_live(client: Client, room_id: str, want: bool, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await client.call("GET", f"/api/v1/rooms/{room_id}")
        if status == 200 and body["live"] is want:
            return
        assert loop.time() < deadline, f"room {room_id} never became live={want}"
        await asyncio.sleep(0.1)


async def dropped_within(proc: asyncio.subprocess.Process, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(proc.wait(), seconds)
    return loop.time() - started


async def test_rotation_and_suspension_drop_publishers_and_no_key_is_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    async with server.db.session() as session, session.begin():
        member = Member(email="pub@example.com", password_hash=await cached_hash(), nickname="pub", role="member",
                        email_verified_at=utcnow())
        session.add(member)
        await session.flush()
        member_id = member.id
    await create_admin(server.db, "root@example.com", PASSWORD, "root")
    publisher = None
    keys: list[str] = []
    async with aiohttp.ClientSession() as http:
        client = Client(http, server.public_url)
        try:
            status, body = await client.call("POST", "/api/v1/auth/login", json={"email": "pub@example.com",
                                                                                 "password": PASSWORD})
            assert status == 200, body
            token = body["access_token"]
            status, body = await client.call("POST", "/api/v1/auth/login", json={"email": "root@example.com",
                                                                                 "password": PASSWORD})
            admin = body["access_token"]
            status, body = await client.call("POST", "/api/v1/rooms", token, {"room_title": "keys"})
            assert status == 201, body
            room_id, live_id = body["room"]["room_id"], body["live"]["live_id"]
            keys.append(body["live"]["stream_key"])

            # On air with the first key; rotating cuts that publisher off.
            publisher = await start_ffmpeg(f"{server.rtmp_url}/{keys[0]}", seconds=60)
            await wait_live(client, room_id, True)
            for path in ("/api/v1/streams", f"/api/v1/rooms/{room_id}/live", f"/api/v1/lives/{live_id}",
                         "/api/v1/admin/lives", "/metrics", "/healthz", f"/live/{room_id}/master.m3u8"):
                await client.call("GET", path, admin if "admin" in path else token)
            status, body = await client.call("POST", f"/api/v1/lives/{live_id}/key", token)
            assert status == 200 and body["publisher_dropped"] is True, body
            keys.append(body["stream_key"])
            assert await dropped_within(publisher, 10) < 1.0 + 2.0  # the 1 s, plus slack for a loaded machine
            await stop_process(publisher)
            code, _ = await ffmpeg_publish(f"{server.rtmp_url}/{keys[0]}", seconds=1, realtime=False)
            assert code != 0, "the rotated-out key still publishes"

            # On air with the new key; suspending the producer drops it.
            publisher = await start_ffmpeg(f"{server.rtmp_url}/{keys[1]}", seconds=60)
            await wait_live(client, room_id, True)
            status, body = await client.call("POST", f"/api/v1/admin/members/{member_id}/suspend", admin)
            assert status == 200 and body["blocked_lives"] == [live_id], body
            assert await dropped_within(publisher, 10) < 1.0 + 2.0  # the 1 s, plus slack for a loaded machine
            await stop_process(publisher)
            async with server.db.session() as session:
                assert (await session.get(Live, live_id)).live_state == "blocked"
                assert (await session.get(LiveBlock, live_id)).source == "suspension"
            code, _ = await ffmpeg_publish(f"{server.rtmp_url}/{keys[1]}", seconds=1, realtime=False)
            assert code != 0, "a suspended producer's live still publishes"
            status, body = await client.call("POST", "/api/v1/auth/login", json={"email": "pub@example.com",
                                                                                 "password": PASSWORD})
            assert status == 403 and body["error"] == "suspended"
        finally:
            if publisher is not None:
                await stop_process(publisher)

    # Every record of every logger, message and arguments, at DEBUG.
    assert len(caplog.records) > 10
    # The ingest's publish and refusal lines were captured too.
    messages = [r.getMessage() for r in caplog.records]
    assert any("publish accepted" in m for m in messages) and any("refused" in m for m in messages)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        for key in keys:
            assert key not in text, f"stream key in a log record of {record.name}: {record.getMessage()[:200]}"
    handing_out = {("POST", "/api/v1/rooms"), ("POST", f"/api/v1/lives/{live_id}/key")}
    others = [text for method, path, text in client.answers if (method, path) not in handing_out]
    assert len(others) > 10
    for key in keys:
        assert all(key not in text for text in others)
