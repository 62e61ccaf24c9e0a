"""Members and authentication: sign-up with email verification, login
(access JWT + rotating refresh token), refresh, logout, password reset by
mail, password change, the member's own profile."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from control_api.authn import check_standing, current_member, iso, member_json
from control_api.context import Api, get_api
from control_api.errors import ApiError, conflict, forbidden, json_response, not_found, too_many, unauthorized
from control_api.mail import MailError
from control_api.rooms import rooms_json
from control_api.tokens import new_family, new_opaque_token, token_digest
from control_api.validation import EMAIL, NICKNAME, PASSWORD, TOKEN, Field, read_json
from storage.models import Member, Producer, Room, utcnow
from storage.passwords import hash_password, verify_password
from storage.tokens import Refresh, add_email_token, add_refresh, revoke_family, revoke_member, use_email_token, use_refresh

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_dummy_hash: str | None = None


async def _dummy() -> str:
    # Unknown emails still cost one scrypt, so timing does not tell which
    # addresses have accounts.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await asyncio.to_thread(hash_password, "livecast-dummy-password")
    return _dummy_hash


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def _limit(limiter, key: str, what: str) -> None:
    wait = limiter.check_and_hit(key)
    if wait > 0:
        raise too_many(f"too many {what}; try again later", wait)


async def _mail_token(api: Api, member: Member, purpose: str) -> str:
    """Store a new single-use token, mail it; returns "sent", "outbox" or "failed"."""
    token = new_opaque_token()
    ttl = api.api.verify_ttl_s if purpose == "verify" else api.api.reset_ttl_s
    async with api.db.session() as session, session.begin():
        await add_email_token(session, member.id, purpose, token_digest(token), ttl)
    if purpose == "verify":
        subject = "Verify your livecast account"
        body = (
            f"Hello {member.nickname},\n\n"
            f"open this link to verify your email address:\n\n"
            f"  {api.public('/api/v1/auth/verify')}?token={token}\n\n"
            f"or send the token with POST /api/v1/auth/verify {{\"token\": \"...\"}}:\n\n"
            f"  verification token: {token}\n\n"
            f"The token is valid for {ttl // 3600} hours.\n"
        )
    else:
        subject = "Reset your livecast password"
        body = (
            f"Hello {member.nickname},\n\n"
            f"someone (hopefully you) asked to reset the password of this account.\n"
            f"Send this token with a new password to POST {api.public('/api/v1/auth/password-reset/confirm')}:\n\n"
            f"  reset token: {token}\n\n"
            f"It is valid for {max(1, ttl // 60)} minutes. If you did not ask, ignore this mail.\n"
        )
    try:
        result = await api.mailer.send(member.email, subject, body)
    except MailError:
        return "failed"
    return "sent" if result == "sent" else "outbox"


async def _issue_login(api: Api, member: Member, family: str | None = None) -> dict:
    refresh = new_opaque_token()
    async with api.db.session() as session, session.begin():
        await add_refresh(session, member.id, family or new_family(), token_digest(refresh), api.api.refresh_ttl_s)
    return {
        "access_token": api.tokens.issue(member.id),
        "token_type": "Bearer",
        "expires_in": api.tokens.ttl_s,
        "refresh_token": refresh,
        "refresh_expires_in": api.api.refresh_ttl_s,
        "member": member_json(member, private=True),
    }


@routes.post("/api/v1/auth/signup")
async def signup(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"email": EMAIL, "password": PASSWORD, "nickname": NICKNAME}, api.max_body_bytes)
    _limit(api.signup_by_address, client_address(request), "sign-ups from this address")
    email = body["email"].lower()
    password_hash = await asyncio.to_thread(hash_password, body["password"])
    member = Member(email=email, password_hash=password_hash, nickname=body["nickname"], role="member")
    try:
        async with api.db.session() as session, session.begin():
            session.add(member)
    except IntegrityError:
        raise conflict("an account with this email exists", "email_taken") from None
    log.info("member %d signed up", member.id)
    mail = await _mail_token(api, member, "verify")
    return json_response({"member": member_json(member, private=True), "verification_mail": mail}, 201)


async def _verify(api: Api, token: str) -> web.Response:
    async with api.db.session() as session, session.begin():
        member_id = await use_email_token(session, "verify", token_digest(token))
        if member_id is None:
            raise ApiError(400, "invalid_token", "the verification token is unknown, used or expired")
        member = await session.get(Member, member_id)
        if member.email_verified_at is None:
            member.email_verified_at = utcnow()
    log.info("member %d verified their email", member_id)
    return json_response({"verified": True, "member": member_json(member, private=True)})


@routes.post("/api/v1/auth/verify")
async def verify_post(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"token": TOKEN}, api.max_body_bytes)
    return await _verify(api, body["token"])


@routes.get("/api/v1/auth/verify")
async def verify_get(request: web.Request) -> web.Response:
    # The link in the mail. The token is a single-use mail token, not a
    # credential: it proves the mailbox and logs nobody in.
    token = request.query.get("token", "")
    if not 1 <= len(token) <= 256:
        raise ApiError(400, "validation_failed", "invalid fields", {"token": "required"})
    return await _verify(get_api(request), token)


async def _member_by_email(api: Api, email: str) -> Member | None:
    async with api.db.session() as session:
        return (await session.execute(select(Member).where(Member.email == email))).scalar_one_or_none()


async def _mail_request(request: web.Request) -> tuple[Api, Member | None]:
    """The common part of the routes that mail a token to `{"email"}`: both
    the sender's address and the mailbox are rate-limited (so neither one
    client nor many can flood one inbox), then the member, if any."""
    api = get_api(request)
    body = await read_json(request, {"email": EMAIL}, api.max_body_bytes)
    email = body["email"].lower()
    _limit(api.mail_by_key, "addr:" + client_address(request), "mail requests")
    _limit(api.mail_by_key, "mail:" + email, "mail requests")
    return api, await _member_by_email(api, email)


@routes.post("/api/v1/auth/verify/resend")
async def verify_resend(request: web.Request) -> web.Response:
    api, member = await _mail_request(request)
    # The same answer whether or not the account exists.
    if member is not None and member.email_verified_at is None and not member.suspended:
        await _mail_token(api, member, "verify")
    return json_response({"accepted": True}, 202)


@routes.post("/api/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"email": EMAIL, "password": Field(str, min_len=1, max_len=1024)}, api.max_body_bytes)
    email = body["email"].lower()
    # Both limits count every attempt: each costs a scrypt hash.
    wait = max(api.login_by_address.retry_after(client_address(request)), api.login_by_account.retry_after(email))
    if wait > 0:
        raise too_many("too many login attempts; try again later", wait)
    api.login_by_address.hit(client_address(request))
    api.login_by_account.hit(email)
    member = await _member_by_email(api, email)
    stored = member.password_hash if member is not None else await _dummy()
    ok = await asyncio.to_thread(verify_password, body["password"], stored)
    if member is None or not ok:
        raise unauthorized("wrong email or password", "invalid_credentials")
    # Checked after the password, so only the account's holder learns it.
    check_standing(api, member)
    log.info("member %d logged in", member.id)
    return json_response(await _issue_login(api, member))


@routes.post("/api/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"refresh_token": TOKEN}, api.max_body_bytes)
    async with api.db.session() as session, session.begin():
        outcome, row = await use_refresh(session, token_digest(body["refresh_token"]))
    if outcome is Refresh.REUSED:
        log.warning("refresh token reused for member %d: family revoked", row.member_id)
        raise unauthorized("refresh token already used; every session of this login is revoked", "token_reused")
    if outcome is not Refresh.OK:
        raise unauthorized(f"refresh token {outcome.value}", "invalid_token")
    async with api.db.session() as session:
        member = await session.get(Member, row.member_id)
    if member is None:
        raise unauthorized("unknown member", "invalid_token")
    check_standing(api, member)
    return json_response(await _issue_login(api, member, row.family))


@routes.post("/api/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"refresh_token": TOKEN}, api.max_body_bytes)
    async with api.db.session() as session, session.begin():
        outcome, row = await use_refresh(session, token_digest(body["refresh_token"]))
        if row is not None:
            await revoke_family(session, row.family)
    if row is None:
        raise unauthorized("unknown refresh token", "invalid_token")
    return web.Response(status=204)


@routes.post("/api/v1/auth/password-reset")
async def password_reset(request: web.Request) -> web.Response:
    api, member = await _mail_request(request)
    if member is not None and not member.suspended:
        await _mail_token(api, member, "reset")
    return json_response({"accepted": True}, 202)


@routes.post("/api/v1/auth/password-reset/confirm")
async def password_reset_confirm(request: web.Request) -> web.Response:
    api = get_api(request)
    body = await read_json(request, {"token": TOKEN, "new_password": PASSWORD}, api.max_body_bytes)
    password_hash = await asyncio.to_thread(hash_password, body["new_password"])
    async with api.db.session() as session, session.begin():
        member_id = await use_email_token(session, "reset", token_digest(body["token"]))
        if member_id is None:
            raise ApiError(400, "invalid_token", "the reset token is unknown, used or expired")
        member = await session.get(Member, member_id)
        member.password_hash = password_hash
        # Reading the mail proves the mailbox too.
        if member.email_verified_at is None:
            member.email_verified_at = utcnow()
        await revoke_member(session, member_id)
    log.info("member %d reset their password", member_id)
    return web.Response(status=204)


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    member = await current_member(request)
    return json_response(member_json(member, private=True))


@routes.patch("/api/v1/me")
async def me_update(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"nickname": NICKNAME}, api.max_body_bytes)
    async with api.db.session() as session, session.begin():
        row = await session.get(Member, member.id)
        row.nickname = body["nickname"]
    return json_response(member_json(row, private=True))


@routes.post("/api/v1/me/password")
async def me_password(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"current_password": Field(str, min_len=1, max_len=1024), "new_password": PASSWORD},
                           api.max_body_bytes)
    # The same per-account budget as login: this route also tests passwords.
    _limit(api.login_by_account, member.email, "password attempts")
    if not await asyncio.to_thread(verify_password, body["current_password"], member.password_hash):
        raise forbidden("the current password is wrong", "invalid_credentials")
    password_hash = await asyncio.to_thread(hash_password, body["new_password"])
    async with api.db.session() as session, session.begin():
        row = await session.get(Member, member.id)
        row.password_hash = password_hash
        revoked = await revoke_member(session, member.id)
    log.info("member %d changed their password; %d refresh tokens revoked", member.id, revoked)
    return web.Response(status=204)


@routes.get("/api/v1/me/rooms")
async def me_rooms(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    async with api.db.session() as session:
        rooms = (await session.execute(
            select(Room).join(Producer, Producer.room_id == Room.room_id)
            .where(Producer.member_id == member.id).order_by(Room.created_at)
        )).scalars().all()
    return json_response({"rooms": await rooms_json(api, rooms)})


@routes.get("/api/v1/members/{member_id:\\d{1,18}}")
async def member_public(request: web.Request) -> web.Response:
    api = get_api(request)
    async with api.db.session() as session:
        member = await session.get(Member, int(request.match_info["member_id"]))
    if member is None:
        raise not_found("no such member")
    return json_response({**member_json(member), "created_at": iso(member.created_at)})
