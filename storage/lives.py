"""Live state changes as compare-and-set updates, so they cannot race.

The ingest moves idle <-> live; only the API sets or lifts blocked.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.database import Database
from storage.keys import digests_match, key_digest
from storage.models import Broadcast, Live, utcnow


async def compare_and_set(session: AsyncSession, live_id: int, expect: tuple[str, ...], new: str) -> bool:
    """Set live_state to `new` if it is one of `expect`; True if it changed."""
    result = await session.execute(
        update(Live).where(Live.live_id == live_id, Live.live_state.in_(expect)).values(live_state=new, updated_at=utcnow())
    )
    return result.rowcount == 1


async def live_by_key(session: AsyncSession, stream_key: str) -> Live | None:
    digest = key_digest(stream_key)
    live = (await session.execute(select(Live).where(Live.live_key == digest))).scalar_one_or_none()
    # The index lookup is by digest; the final compare is constant-time so
    # the answer's timing says nothing about near misses.
    if live is None or not digests_match(live.live_key, digest):
        return None
    return live


async def close_open_broadcasts(session: AsyncSession, live_id: int | None, reason: str) -> int:
    query = update(Broadcast).where(Broadcast.ended_at.is_(None))
    if live_id is not None:
        query = query.where(Broadcast.live_id == live_id)
    result = await session.execute(query.values(ended_at=utcnow(), end_reason=reason))
    return result.rowcount


async def reset_crashed_lives(db: Database) -> int:
    """On start: lives left `live` by a crash go back to `idle` and their open
    broadcast rows are closed. Assumes one ingest process per database."""
    async with db.session() as session, session.begin():
        result = await session.execute(
            update(Live).where(Live.live_state == "live").values(live_state="idle", updated_at=utcnow())
        )
        await close_open_broadcasts(session, None, "server restart")
        return result.rowcount
