"""The control API (/api/v1): members, auth, rooms, producers, lives and keys,
reports, admin, on-air streams. See docs/api.md.

The composition root calls `mount_api(app, ApiContext(...))`; the CLI calls
`create_admin(...)`.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import select

from control_api.context import API_KEY, Api, ApiContext
from control_api.cors import cors_middleware
from control_api.errors import ApiError, problem_middleware
from control_api.validation import EMAIL, NICKNAME, PASSWORD, body_limit_middleware, validate
from storage.database import Database
from storage.models import Member, utcnow
from storage.passwords import hash_password

__all__ = ["ApiContext", "mount_api", "create_admin"]

log = logging.getLogger(__name__)


def mount_api(app: web.Application, ctx: ApiContext) -> None:
    """Add the /api/v1 routes and the /api/-only middlewares (CORS outside,
    then JSON problems, then the body limit) to `app`; other routes are left
    as they are."""
    from control_api import admin, lives, members, openapi, reports, rooms, streams

    app[API_KEY] = Api.build(ctx)
    # Outermost first: CORS headers go on problem answers too.
    app.middlewares.append(cors_middleware(list(ctx.config.api.cors_origins)))
    app.middlewares.append(problem_middleware)
    app.middlewares.append(body_limit_middleware(ctx.config.http.max_body_bytes))
    for module in (members, rooms, lives, reports, admin, streams, openapi):
        app.router.add_routes(module.routes)


async def create_admin(db: Database, email: str, password: str, nickname: str) -> int:
    """Create a verified admin, or promote (and verify) the member with this
    email, setting the given password. Returns the member id."""
    try:
        body = validate({"email": email, "password": password, "nickname": nickname},
                        {"email": EMAIL, "password": PASSWORD, "nickname": NICKNAME})
    except ApiError as exc:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in exc.fields.items()) or exc.message) from None
    email = body["email"].lower()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with db.session() as session, session.begin():
        member = (await session.execute(select(Member).where(Member.email == email))).scalar_one_or_none()
        if member is None:
            member = Member(email=email, password_hash=password_hash, nickname=nickname, role="admin",
                            email_verified_at=utcnow(), suspended=False)
            session.add(member)
            await session.flush()
        else:
            member.role = "admin"
            member.password_hash = password_hash
            member.suspended = False
            if member.email_verified_at is None:
                member.email_verified_at = utcnow()
        member_id = member.id
    log.info("member %d is an admin", member_id)
    return member_id
