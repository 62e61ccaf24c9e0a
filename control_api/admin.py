"""Admin routes (role admin): reports grouped by reported member, most
distinct reporters first; resolving them; suspending members; any live's
state; member and live listings."""
from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import func, select, update

from control_api.authn import current_admin, iso, member_json
from control_api.context import get_api
from control_api.errors import bad_request, json_response, not_found
from control_api.lives import LIVE_ID_RE, STATE_BODY, block_member_lives, set_live_state, unblock_member_lives
from control_api.rooms import live_json
from control_api.validation import Field, page, query_bool, read_json
from storage.models import Live, Member, Producer, Report, utcnow
from storage.tokens import revoke_member

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MEMBER_ID_RE = r"{member_id:\d{1,18}}"
UNBLOCK = {"unblock_lives": Field(bool, required=False)}


async def _member_or_404(session, member_id: int) -> Member:
    member = await session.get(Member, member_id)
    if member is None:
        raise not_found("no such member")
    return member


async def _member_lives(session, member_ids: list[int]) -> dict[int, list[dict]]:
    rows = (await session.execute(
        select(Producer.member_id, Live.live_id, Live.room_id, Live.live_state)
        .join(Live, Live.room_id == Producer.room_id).where(Producer.member_id.in_(member_ids))
    )).all()
    lives: dict[int, list[dict]] = {}
    for member_id, live_id, room_id, state in rows:
        lives.setdefault(member_id, []).append({"live_id": live_id, "room_id": room_id, "live_state": state})
    return lives


@routes.get("/api/v1/admin/reports")
async def list_reports(request: web.Request) -> web.Response:
    api = get_api(request)
    await current_admin(request)
    limit, offset = page(request)
    include_resolved = query_bool(request, "include_resolved")
    where = [] if include_resolved else [Report.resolved_at.is_(None)]
    reporters = func.count(func.distinct(Report.report_user_id)).label("reporters")
    latest = func.max(Report.updated_at).label("latest")
    async with api.db.session() as session:
        groups = (await session.execute(
            select(Report.reported_user_id, reporters, func.sum(Report.count), latest)
            .where(*where).group_by(Report.reported_user_id)
            .order_by(reporters.desc(), latest.desc(), Report.reported_user_id)
            .limit(limit).offset(offset)
        )).all()
        ids = [g[0] for g in groups]
        members = {m.id: m for m in (await session.execute(select(Member).where(Member.id.in_(ids)))).scalars()}
        reports = (await session.execute(
            select(Report).where(Report.reported_user_id.in_(ids), *where).order_by(Report.updated_at.desc())
        )).scalars().all()
        lives = await _member_lives(session, ids)
    by_member: dict[int, list[dict]] = {}
    for r in reports:
        by_member.setdefault(r.reported_user_id, []).append({
            "id": r.id, "reporter_id": r.report_user_id, "content": r.content, "count": r.count,
            "create_date": iso(r.create_date), "updated_at": iso(r.updated_at), "resolved_at": iso(r.resolved_at),
        })
    answer = []
    for member_id, distinct, total, last in groups:
        member = members.get(member_id)
        answer.append({
            "member": member_json(member, private=True) if member else {"id": member_id},
            "distinct_reporters": distinct,
            "total_count": int(total or 0),
            "latest_at": iso(last),
            "threshold_reached": bool(api.api.report_threshold) and distinct >= api.api.report_threshold,
            "lives": lives.get(member_id, []),
            "reports": by_member.get(member_id, []),
        })
    return json_response({"groups": answer, "limit": limit, "offset": offset})


@routes.post(f"/api/v1/admin/reports/{MEMBER_ID_RE}/resolve")
async def resolve_reports(request: web.Request) -> web.Response:
    api = get_api(request)
    admin = await current_admin(request)
    body = await read_json(request, UNBLOCK, api.max_body_bytes)
    member_id = int(request.match_info["member_id"])
    async with api.db.session() as session, session.begin():
        await _member_or_404(session, member_id)
        result = await session.execute(
            update(Report).where(Report.reported_user_id == member_id, Report.resolved_at.is_(None)).values(resolved_at=utcnow())
        )
    unblocked = await unblock_member_lives(api, member_id) if body.get("unblock_lives") else []
    log.info("admin %d resolved %d reports of member %d", admin.id, result.rowcount, member_id)
    return json_response({"member_id": member_id, "resolved": result.rowcount, "unblocked_lives": unblocked})


@routes.get("/api/v1/admin/members")
async def list_members(request: web.Request) -> web.Response:
    api = get_api(request)
    await current_admin(request)
    limit, offset = page(request)
    email = request.query.get("email")
    query = select(Member).order_by(Member.id)
    if email is not None:
        if len(email) > 254:
            raise bad_request("invalid query parameter", {"email": "too long"})
        query = query.where(Member.email == email.lower())
    async with api.db.session() as session:
        members = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return json_response({"members": [member_json(m, private=True) for m in members], "limit": limit, "offset": offset})


@routes.post(f"/api/v1/admin/members/{MEMBER_ID_RE}/suspend")
async def suspend(request: web.Request) -> web.Response:
    api = get_api(request)
    admin = await current_admin(request)
    await read_json(request, {}, api.max_body_bytes)
    member_id = int(request.match_info["member_id"])
    if member_id == admin.id:
        raise bad_request("you cannot suspend yourself", {"member_id": "must not be yourself"})
    async with api.db.session() as session, session.begin():
        member = await _member_or_404(session, member_id)
        member.suspended = True
        # Their sessions end now; access tokens fail at the next request.
        await revoke_member(session, member_id)
    blocked = await block_member_lives(api, member_id, "producer suspended", "suspension")
    log.warning("admin %d suspended member %d", admin.id, member_id)
    return json_response({"member": member_json(member, private=True), "blocked_lives": blocked})


@routes.post(f"/api/v1/admin/members/{MEMBER_ID_RE}/unsuspend")
async def unsuspend(request: web.Request) -> web.Response:
    api = get_api(request)
    admin = await current_admin(request)
    body = await read_json(request, UNBLOCK, api.max_body_bytes)
    member_id = int(request.match_info["member_id"])
    async with api.db.session() as session, session.begin():
        member = await _member_or_404(session, member_id)
        member.suspended = False
    unblocked = await unblock_member_lives(api, member_id) if body.get("unblock_lives") else []
    log.warning("admin %d lifted the suspension of member %d", admin.id, member_id)
    return json_response({"member": member_json(member, private=True), "unblocked_lives": unblocked})


@routes.get("/api/v1/admin/lives")
async def list_lives(request: web.Request) -> web.Response:
    api = get_api(request)
    await current_admin(request)
    limit, offset = page(request)
    state = request.query.get("live_state")
    query = select(Live).order_by(Live.live_id)
    if state is not None:
        if state not in ("idle", "live", "blocked"):
            raise bad_request("invalid query parameter", {"live_state": "must be one of idle, live, blocked"})
        query = query.where(Live.live_state == state)
    async with api.db.session() as session:
        lives = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return json_response({"lives": [live_json(api, live) for live in lives], "limit": limit, "offset": offset})


@routes.put(f"/api/v1/admin/lives/{LIVE_ID_RE}/state")
async def admin_live_state(request: web.Request) -> web.Response:
    api = get_api(request)
    admin = await current_admin(request)
    body = await read_json(request, STATE_BODY, api.max_body_bytes)
    live_id = int(request.match_info["live_id"])
    async with api.db.session() as session:
        if await session.get(Live, live_id) is None:
            raise not_found("no such live")
    state, dropped = await set_live_state(api, live_id, body["live_state"], f"{body['live_state']} by admin {admin.id}",
                                          "admin")
    async with api.db.session() as session:
        live = await session.get(Live, live_id)
    return json_response({**live_json(api, live), "publisher_dropped": dropped})
