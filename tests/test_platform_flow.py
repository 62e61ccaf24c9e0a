"""The whole platform end to end against one running server: sign up, the
verification mail at a real SMTP server, login, a room and its key, a real
ffmpeg publish, an admin block that drops the publisher and refuses the
next publish, unblock, and publishing again."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timezone

import aiohttp
import pytest

from control_api import create_admin
from support.api import mail_token, start_smtp
from support.publishers import ffmpeg_publish, start_ffmpeg, stop_process

from conftest import server_config

pytestmark = pytest.mark.slow


async def call(http, method, url, token=None, json=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=json, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def room_is_live(http, base, room_id, want: bool, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await call(http, "GET", f"{base}/api/v1/rooms/{room_id}")
        if status == 200 and body["live"] is want:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_signup_to_publish_to_block_and_back(tmp_path):
    from livecast.app import Livecast

    smtp, inbox = await start_smtp()
    smtp_port = smtp.sockets[0].getsockname()[1]
    server = Livecast(server_config(tmp_path / "data", mail={"smtp_host": "127.0.0.1", "smtp_port": smtp_port}))
    await server.start()
    publisher = None
    try:
        base = server.public_url
        async with aiohttp.ClientSession() as http:
            status, body = await call(http, "POST", f"{base}/api/v1/auth/signup",
                                      json={"email": "bob@example.com", "password": "a long password", "nickname": "bob"})
            assert status == 201, body
            [mail] = await inbox.wait_for(1)
            status, body = await call(http, "POST", f"{base}/api/v1/auth/verify", json={"token": mail_token(mail)})
            assert status == 200, body
            status, body = await call(http, "POST", f"{base}/api/v1/auth/login",
                                      json={"email": "bob@example.com", "password": "a long password"})
            assert status == 200, body
            bob = body["access_token"]

            status, body = await call(http, "POST", f"{base}/api/v1/rooms", bob, {"room_title": "Bob's room"})
            assert status == 201, body
            room_id, live_id, first_key = body["room"]["room_id"], body["live"]["live_id"], body["live"]["stream_key"]
            assert body["live"]["rtmp_url"] == server.rtmp_url
            status, body = await call(http, "POST", f"{base}/api/v1/lives/{live_id}/key", bob)
            assert status == 200, body
            key = body["stream_key"]

            # The old key is dead; the new one publishes and the room is live.
            code, _ = await ffmpeg_publish(f"{server.rtmp_url}/{first_key}", seconds=1, realtime=False)
            assert code != 0
            publisher = await start_ffmpeg(f"{server.rtmp_url}/{key}", seconds=60)
            assert await room_is_live(http, base, room_id, True)
            for _ in range(50):  # codecs are known once both sequence headers arrived
                status, body = await call(http, "GET", f"{base}/api/v1/streams")
                if body["streams"] and body["streams"][0]["codecs"] == "h264,aac":
                    break
                await asyncio.sleep(0.1)
            [stream] = body["streams"]
            assert stream["room_id"] == room_id and stream["renditions"] == ["source"]
            assert stream["codecs"] == "h264,aac"
            started = datetime.fromisoformat(stream["started_at"])
            assert abs((datetime.now(timezone.utc) - started).total_seconds()) < 30

            # An admin blocks the live: the publisher is dropped within 1 s.
            await create_admin(server.db, "root@example.com", "admin password", "root")
            status, body = await call(http, "POST", f"{base}/api/v1/auth/login",
                                      json={"email": "root@example.com", "password": "admin password"})
            admin = body["access_token"]
            loop = asyncio.get_running_loop()
            started = loop.time()
            status, body = await call(http, "PUT", f"{base}/api/v1/admin/lives/{live_id}/state", admin,
                                      {"live_state": "blocked"})
            assert status == 200, body
            assert body["publisher_dropped"] is True  # the block itself cut the publisher
            await asyncio.wait_for(publisher.wait(), 10)
            assert loop.time() - started < 1.0 + 2.0  # 1 s, plus slack for a loaded machine
            await stop_process(publisher)

            # Every publish with the key is refused while blocked...
            code, _ = await ffmpeg_publish(f"{server.rtmp_url}/{key}", seconds=1, realtime=False)
            assert code != 0
            status, body = await call(http, "GET", f"{base}/api/v1/rooms/{room_id}/live", bob)
            assert body["live_state"] == "blocked"
            # ...and the producer cannot lift an admin's block.
            status, body = await call(http, "PUT", f"{base}/api/v1/lives/{live_id}/state", bob, {"live_state": "idle"})
            assert status == 403, body

            # Unblocked by the admin: publishing works again.
            status, body = await call(http, "PUT", f"{base}/api/v1/admin/lives/{live_id}/state", admin,
                                      {"live_state": "idle"})
            assert status == 200, body
            publisher = await start_ffmpeg(f"{server.rtmp_url}/{key}", seconds=60)
            assert await room_is_live(http, base, room_id, True)
    finally:
        if publisher is not None:
            await stop_process(publisher)
        await server.stop()
        smtp.close()
        await smtp.wait_closed()


def test_admin_create_cli_makes_an_admin_who_can_log_in(tmp_path):
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "livecast.cli", "admin", "create", "--data-dir", str(data),
         "--email", "ops@example.com", "--password-stdin"],
        input="ops password 1\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"role": "admin"' in result.stdout
    assert "ops password 1" not in result.stdout + result.stderr

    async def login():
        server = __import__("livecast.app", fromlist=["Livecast"]).Livecast(server_config(data))
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                status, body = await call(http, "POST", f"{server.public_url}/api/v1/auth/login",
                                          json={"email": "ops@example.com", "password": "ops password 1"})
                assert status == 200, body
                status, body = await call(http, "GET", f"{server.public_url}/api/v1/admin/reports", body["access_token"])
                assert status == 200, body
        finally:
            await server.stop()

    asyncio.run(login())


def test_admin_create_refuses_a_short_password(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "livecast.cli", "admin", "create", "--data-dir", str(tmp_path),
         "--email", "ops@example.com", "--password-stdin"],
        input="short\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "at least 8" in result.stderr


def test_admin_create_refuses_a_bad_email(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "livecast.cli", "admin", "create", "--data-dir", str(tmp_path),
         "--email", "not-an-email", "--password-stdin"],
        input="long enough password\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "email" in result.stderr and "Traceback" not in result.stderr
