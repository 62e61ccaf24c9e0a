"""Publish authorization against the database: the ingest's PublishAuthority.

A publish is accepted when the stream key's digest matches a live that is not
blocked and none of whose room's producers is suspended. Acceptance moves the
live to `live` (compare-and-set) and opens a broadcasts row; the end of the
publish closes the row and, unless another publisher took over, moves the live
back to `idle`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import exists, select, update

from ingest.server import PublishInfo, PublishRefused
from storage.database import Database
from storage.lives import compare_and_set, live_by_key
from storage.models import Broadcast, Member, Producer, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Grant:
    live_id: int
    room_id: str
    broadcast_id: int


class DatabaseAuthority:
    def __init__(self, db: Database, registry, *, app_name: str = "live") -> None:
        self._db = db
        self._registry = registry
        self._app_name = app_name
        self._rooms: dict[int, str] = {}

    def room_of(self, live_id: int) -> str | None:
        return self._rooms.get(live_id)

    async def authorize(self, app: str, stream_key: str, remote: str) -> Grant:
        if app != self._app_name:
            raise PublishRefused(f"unknown application {app!r}")
        async with self._db.session() as session, session.begin():
            live = await live_by_key(session, stream_key)
            if live is None:
                raise PublishRefused("unknown stream key")
            if live.live_state == "blocked":
                raise PublishRefused("this live is blocked")
            suspended = await session.scalar(
                select(
                    exists().where(
                        Producer.room_id == live.room_id, Producer.member_id == Member.id, Member.suspended.is_(True)
                    )
                )
            )
            if suspended:
                raise PublishRefused("a producer of this room is suspended")
            # idle -> live, or live -> live for a takeover; a block that raced
            # in between makes the update match nothing.
            if not await compare_and_set(session, live.live_id, ("idle", "live"), "live"):
                raise PublishRefused("this live is blocked")
            broadcast = Broadcast(live_id=live.live_id, remote_address=remote[:64])
            session.add(broadcast)
            await session.flush()
            grant = Grant(live.live_id, live.room_id, broadcast.id)
        self._rooms[grant.live_id] = grant.room_id
        log.info("publish accepted: live %d room %s from %s", grant.live_id, grant.room_id, remote)
        return grant

    async def update(self, grant: Grant, info: PublishInfo) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == grant.broadcast_id)
                .values(
                    encoder=(info.encoder or None) and info.encoder[:128],
                    video_codec=info.video_codec,
                    audio_codec=info.audio_codec,
                )
            )

    async def ended(self, grant: Grant, *, bytes_received: int, reason: str) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == grant.broadcast_id, Broadcast.ended_at.is_(None))
                .values(ended_at=utcnow(), bytes_received=bytes_received, end_reason=reason[:64])
            )
            if self._registry.publisher(grant.live_id) is None:
                await compare_and_set(session, grant.live_id, ("live",), "idle")
        log.info("publish ended: live %d (%s, %d bytes)", grant.live_id, reason, bytes_received)
