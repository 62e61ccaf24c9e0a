"""Who is calling: bearer access tokens (RFC 6750 2.1, the Authorization
header only, never a query string or cookie) and the role checks of the
routes."""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_api.context import Api, get_api
from control_api.errors import forbidden, not_found, unauthorized
from control_api.tokens import TokenError
from storage.models import Live, Member, Producer, Room

MEMBER_KEY = web.RequestKey("control_api_member", Member)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def iso(dt: datetime | None) -> str | None:
    dt = aware(dt)
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("use Authorization: Bearer <access token>", "invalid_token")
    return token.strip()


async def current_member(request: web.Request, *, allow_unverified: bool = False) -> Member:
    """The authenticated member, loaded fresh so suspension and role changes
    apply at once. 401 without a valid token; 403 when suspended."""
    cached = request.get(MEMBER_KEY)
    if cached is not None:
        return cached
    api = get_api(request)
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    try:
        claims = api.tokens.verify(token)
    except TokenError as exc:
        raise unauthorized(str(exc), "invalid_token") from None
    async with api.db.session() as session:
        member = await session.get(Member, claims.member_id)
    if member is None:
        raise unauthorized("unknown member", "invalid_token")
    check_standing(api, member, allow_unverified=allow_unverified)
    request[MEMBER_KEY] = member
    return member


def check_standing(api: Api, member: Member, *, allow_unverified: bool = False) -> None:
    """403 for a suspended member, and for an unverified one where the config
    requires verification: the same rule for login and for every request."""
    if member.suspended:
        raise forbidden("this account is suspended", "suspended")
    if not allow_unverified and api.api.require_verified_email and member.email_verified_at is None:
        raise forbidden("verify your email address first (POST /api/v1/auth/verify/resend for a new mail)",
                        "email_not_verified")


async def current_admin(request: web.Request) -> Member:
    member = await current_member(request)
    if member.role != "admin":
        raise forbidden("admins only")
    return member


async def is_producer(session: AsyncSession, member_id: int, room_id: str) -> bool:
    found = await session.execute(
        select(Producer.producer_id).where(Producer.member_id == member_id, Producer.room_id == room_id)
    )
    return found.first() is not None


async def room_for_producer(session: AsyncSession, member: Member, room_id: str) -> Room:
    room = await session.get(Room, room_id)
    if room is None:
        raise not_found("no such room")
    if not await is_producer(session, member.id, room_id):
        raise forbidden("only the room's producers may do this", "not_producer")
    return room


async def live_for_producer(session: AsyncSession, member: Member, live_id: int) -> Live:
    live = await session.get(Live, live_id)
    if live is None:
        raise not_found("no such live")
    if not await is_producer(session, member.id, live.room_id):
        raise forbidden("only the room's producers may do this", "not_producer")
    return live


def member_json(member: Member, *, private: bool = False) -> dict:
    data = {"id": member.id, "nickname": member.nickname}
    if private:
        data.update(
            email=member.email,
            role=member.role,
            email_verified=member.email_verified_at is not None,
            suspended=member.suspended,
            created_at=iso(member.created_at),
        )
    return data
