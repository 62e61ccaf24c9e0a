"""The demo account, room and live that `livecast demo` creates once.

The stream key is kept in the data dir (mode 0600) because only its digest
is in the database and the demo must print it on every run.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from storage.database import Database
from storage.keys import key_digest, new_stream_key
from storage.models import Live, Member, Producer, Room, utcnow
from storage.passwords import hash_password

DEMO_EMAIL = "demo@livecast.local"
DEMO_ROOM_ID = "demo"


@dataclass(frozen=True)
class DemoLive:
    room_id: str
    live_id: int
    stream_key: str
    email: str
    password: str


async def ensure_demo(db: Database, data_dir: Path) -> DemoLive:
    secrets_file = Path(data_dir) / "demo.json"
    saved = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    password = saved.get("password") or secrets.token_urlsafe(12)
    key = saved.get("stream_key") or new_stream_key()
    async with db.session() as session, session.begin():
        member = (await session.execute(select(Member).where(Member.email == DEMO_EMAIL))).scalar_one_or_none()
        if member is None:
            member = Member(email=DEMO_EMAIL, password_hash=hash_password(password), nickname="demo", email_verified_at=utcnow())
            session.add(member)
            await session.flush()
        room = await session.get(Room, DEMO_ROOM_ID)
        if room is None:
            session.add(Room(room_id=DEMO_ROOM_ID, room_title="Demo room", room_info="Made by livecast demo"))
            await session.flush()
            session.add(Producer(member_id=member.id, room_id=DEMO_ROOM_ID))
        live = (await session.execute(select(Live).where(Live.room_id == DEMO_ROOM_ID))).scalar_one_or_none()
        if live is None:
            live = Live(room_id=DEMO_ROOM_ID, live_key=key_digest(key))
            session.add(live)
            await session.flush()
        elif live.live_key != key_digest(key):
            # The key was rotated through the API: take a new one for the demo.
            key = new_stream_key()
            live.live_key = key_digest(key)
        live_id = live.live_id
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"stream_key": key, "password": password}, f)
    return DemoLive(DEMO_ROOM_ID, live_id, key, DEMO_EMAIL, password)
