"""SQL for the control API's stored tokens: refresh-token families (rotate on
use, replay revokes the family) and single-use mail tokens. Only SHA-256
digests of tokens are stored."""
from __future__ import annotations

import enum
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import EmailToken, RefreshToken, utcnow


class Refresh(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"


async def add_refresh(session: AsyncSession, member_id: int, family: str, digest: str, ttl_s: int) -> None:
    session.add(RefreshToken(member_id=member_id, family=family, token_digest=digest,
                             expires_at=utcnow() + timedelta(seconds=ttl_s)))


async def use_refresh(session: AsyncSession, digest: str) -> tuple[Refresh, RefreshToken | None]:
    """Mark the token used if it is live. A token already used (a replay, or a
    race of two clients holding the same token) revokes its whole family."""
    row = (await session.execute(select(RefreshToken).where(RefreshToken.token_digest == digest))).scalar_one_or_none()
    if row is None:
        return Refresh.UNKNOWN, None
    if row.revoked_at is not None:
        return Refresh.REVOKED, row
    now = utcnow()
    if row.used_at is None:
        # Expiry compared in SQL: SQLite returns naive datetimes.
        claimed = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
                   RefreshToken.revoked_at.is_(None), RefreshToken.expires_at > now)
            .values(used_at=now)
            # Compared in SQL only: in Python, SQLite's naive datetimes would
            # not compare with aware ones.
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:
            return Refresh.OK, row
        fresh = (await session.execute(
            select(RefreshToken.used_at, RefreshToken.revoked_at).where(RefreshToken.id == row.id))).one()
        if fresh.used_at is None and fresh.revoked_at is None:
            return Refresh.EXPIRED, row
        if fresh.revoked_at is not None:
            return Refresh.REVOKED, row
    await revoke_family(session, row.family)
    return Refresh.REUSED, row


async def revoke_family(session: AsyncSession, family: str) -> int:
    result = await session.execute(
        update(RefreshToken).where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return result.rowcount


async def revoke_member(session: AsyncSession, member_id: int) -> int:
    result = await session.execute(
        update(RefreshToken).where(RefreshToken.member_id == member_id, RefreshToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return result.rowcount


async def add_email_token(session: AsyncSession, member_id: int, purpose: str, digest: str, ttl_s: int) -> None:
    session.add(EmailToken(member_id=member_id, purpose=purpose, token_digest=digest,
                           expires_at=utcnow() + timedelta(seconds=ttl_s)))


async def use_email_token(session: AsyncSession, purpose: str, digest: str) -> int | None:
    """Consume a live single-use token; returns its member id or None."""
    row = (await session.execute(
        select(EmailToken).where(EmailToken.token_digest == digest, EmailToken.purpose == purpose))).scalar_one_or_none()
    if row is None:
        return None
    claimed = await session.execute(
        update(EmailToken)
        .where(EmailToken.id == row.id, EmailToken.used_at.is_(None), EmailToken.expires_at > utcnow())
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return row.member_id if claimed.rowcount == 1 else None


async def purge_expired(session: AsyncSession) -> int:
    """Delete refresh and mail tokens past their expiry: they are refused
    anyway (an expired refresh token cannot be replayed either), and without
    this the tables would only grow."""
    now = utcnow()
    removed = 0
    for model in (RefreshToken, EmailToken):
        result = await session.execute(delete(model).where(model.expires_at < now))
        removed += result.rowcount
    return removed
