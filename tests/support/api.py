"""Fixtures and helpers shared by the control API tests (no tests here).

A real aiohttp server on 127.0.0.1:0 with only the API mounted, a real SQLite
database in tmp_path, and a real SMTP server (aiosmtpd) on port 0 in the
test's own event loop. ctx.drop_live is a recorder: the ingest is not under
test here.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import re
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP

from control_api import ApiContext, create_admin, mount_api
from livecast.config import load_config
from storage.database import Database
from storage.models import Member, utcnow
from storage.passwords import hash_password

RTMP_URL = "rtmp://127.0.0.1:1935/live"
PASSWORD = "correct horse battery"


class Inbox:
    """aiosmtpd handler: keeps every message received."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self._arrived = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self._arrived.set()
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list:
        async def _wait():
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(_wait(), timeout)
        return self.messages


def mail_token(message, kind: str = "verification") -> str:
    body = message.get_content() if hasattr(message, "get_content") else str(message)
    return re.search(rf"{kind} token: (\S+)", body).group(1)


@dataclass
class Reply:
    status: int
    body: object
    text: str
    headers: dict


@dataclass
class Harness:
    base: str
    http: aiohttp.ClientSession
    db: Database
    data_dir: Path
    inbox: Inbox | None
    drops: list = field(default_factory=list)
    on_air: list = field(default_factory=list)
    log: list = field(default_factory=list)     # (method, path, status, text, headers) of every reply
    app: object = None

    async def call(self, method: str, path: str, json=None, token: str | None = None, data=None,
                   headers: dict | None = None) -> Reply:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, json=json, data=data, headers=hdrs) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None) if text else None
            except ValueError:
                body = None
            reply = Reply(resp.status, body, text, dict(resp.headers))
        self.log.append((method, path, reply.status, text, reply.headers))
        return reply

    async def member(self, email: str, *, role: str = "member", verified: bool = True,
                     nickname: str = "m") -> tuple[int, str | None]:
        """A member stored directly (one scrypt per test run, not per member),
        logged in through the API: (member id, access token)."""
        async with self.db.session() as session, session.begin():
            member = Member(email=email, password_hash=await cached_hash(), nickname=nickname, role=role,
                            email_verified_at=utcnow() if verified else None)
            session.add(member)
            await session.flush()
            member_id = member.id
        if not verified:
            return member_id, None   # login would be refused
        reply = await self.call("POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
        assert reply.status == 200, reply.text
        return member_id, reply.body["access_token"]

    async def room(self, token: str, title: str = "a room") -> dict:
        reply = await self.call("POST", "/api/v1/rooms", {"room_title": title}, token=token)
        assert reply.status == 201, reply.text
        return reply.body


_hash: str | None = None


async def cached_hash() -> str:
    global _hash
    if _hash is None:
        _hash = await asyncio.to_thread(hash_password, PASSWORD)
    return _hash


async def start_smtp() -> tuple[asyncio.AbstractServer, Inbox]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="localhost", loop=loop), "127.0.0.1", 0)
    return server, inbox


def api_config(data_dir: Path, smtp_port: int | None, **sections):
    overrides = {
        "server": {"data_dir": str(data_dir)},
        "mail": {"smtp_host": "127.0.0.1" if smtp_port else "", "smtp_port": smtp_port or 25, "timeout_s": 5.0},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(environ={}, overrides=overrides)


async def start_harness(tmp_path: Path, *, smtp: bool = True, **sections):
    smtp_server, inbox = (await start_smtp()) if smtp else (None, None)
    port = smtp_server.sockets[0].getsockname()[1] if smtp_server else None
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = api_config(data_dir, port, **sections)
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'api.db'}")
    await db.create_all()
    drops: list = []
    on_air: list = []

    def drop_live(live_id: int, reason: str) -> bool:
        drops.append((live_id, reason))
        return True

    app = web.Application()
    ctx = ApiContext(db=db, config=config, data_dir=data_dir, public_url="http://viewer.test",
                     rtmp_url=RTMP_URL, drop_live=drop_live, streams=lambda: list(on_air),
                     thumbnail_url=lambda room_id: f"http://viewer.test/live/{room_id}/thumbnail.jpg")
    mount_api(app, ctx)

    async def plain(request):
        return web.Response(text="not the api")
    app.router.add_get("/live/{room_id}/master.m3u8", plain)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port_http = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    harness = Harness(f"http://127.0.0.1:{port_http}", http, db, data_dir, inbox, drops, on_air, app=app)

    async def stop():
        await http.close()
        await runner.cleanup()
        await db.dispose()
        if smtp_server is not None:
            smtp_server.close()
            await smtp_server.wait_closed()
    return harness, stop


@pytest.fixture
async def api(tmp_path):
    harness, stop = await start_harness(tmp_path)
    try:
        yield harness
    finally:
        await stop()


@pytest.fixture
async def admin_token(api):
    """(admin id, access token) of an admin made with create_admin."""
    admin_id = await create_admin(api.db, "root@example.com", PASSWORD, "root")
    reply = await api.call("POST", "/api/v1/auth/login", {"email": "root@example.com", "password": PASSWORD})
    assert reply.status == 200, reply.text
    return admin_id, reply.body["access_token"]


def registered_api_routes(app) -> set[tuple[str, str]]:
    """(path template, method) of every /api/v1 route of the app."""
    found = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical.startswith("/api/v1") and route.method not in ("HEAD", "*"):
            found.add((canonical, route.method))
    return found


def assert_no_key_leak(harness: Harness) -> int:
    """Every stream key handed out (room creation, rotation) appears in no
    other reply, body or header. Returns how many keys were checked."""
    keys, others = set(), []
    for method, path, status, text, headers in harness.log:
        handing_out = method == "POST" and (path == "/api/v1/rooms" or path.endswith("/key")) and status < 300
        if handing_out:
            import json
            body = json.loads(text)
            keys.add((body.get("live") or body)["stream_key"])
            others.append(json.dumps(headers))
        else:
            others.append(text + json_dumps(headers))
    for key in keys:
        assert len(key) >= 32
        for blob in others:
            assert key not in blob
    return len(keys)


def json_dumps(value) -> str:
    import json
    return json.dumps(value)
