"""Member reports. Reporting the same member again raises `count` and keeps
the latest content; moderation acts on *distinct* reporters: at
api.report_threshold unresolved distinct reporters, the reported member's
lives are blocked pending an admin's review."""
from __future__ import annotations

import logging
from datetime import timedelta

from aiohttp import web
from sqlalchemy import delete, func, select

from control_api.authn import aware, current_member, iso
from control_api.context import get_api
from control_api.errors import bad_request, forbidden, json_response, not_found, too_many
from control_api.lives import block_member_lives
from control_api.validation import Field, check_multiline, read_json
from storage.models import REPORT_CONTENT_MAX, Member, Report, ReportEvent, utcnow

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

HOUR_S = 3600


async def distinct_reporters(session, member_id: int) -> int:
    return (await session.execute(
        select(func.count(func.distinct(Report.report_user_id)))
        .where(Report.reported_user_id == member_id, Report.resolved_at.is_(None))
    )).scalar_one()


@routes.post("/api/v1/reports")
async def create_report(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {
        "member_id": Field(int, min_len=1, max_len=2**62),
        "content": Field(str, min_len=1, max_len=REPORT_CONTENT_MAX, check=check_multiline),
    }, api.max_body_bytes)
    # Reporting is for verified members even where login does not require it.
    if member.email_verified_at is None:
        raise forbidden("verify your email address first", "email_not_verified")
    if body["member_id"] == member.id:
        raise bad_request("you cannot report yourself", {"member_id": "must not be yourself"})
    now = utcnow()
    async with api.db.session() as session, session.begin():
        if await session.get(Member, body["member_id"]) is None:
            raise not_found("no such member")
        # Events past the window count for nothing: dropped here so the
        # table stays bounded by an hour of reports.
        await session.execute(delete(ReportEvent).where(ReportEvent.created_at <= now - timedelta(seconds=HOUR_S)))
        # Counted in SQL so the limit holds across restarts and processes.
        recent = (await session.execute(
            select(func.count(), func.min(ReportEvent.created_at))
            .where(ReportEvent.report_user_id == member.id, ReportEvent.created_at > now - timedelta(seconds=HOUR_S))
        )).one()
        if api.api.reports_per_hour and recent[0] >= api.api.reports_per_hour:
            oldest = recent[1]
            wait = HOUR_S
            if oldest is not None:
                wait = max(1, HOUR_S - int((now - aware(oldest)).total_seconds()))
            raise too_many(f"at most {api.api.reports_per_hour} reports an hour", wait)
        session.add(ReportEvent(report_user_id=member.id, reported_user_id=body["member_id"], created_at=now))
        report = (await session.execute(
            select(Report).where(Report.reported_user_id == body["member_id"], Report.report_user_id == member.id)
        )).scalar_one_or_none()
        if report is None:
            report = Report(reported_user_id=body["member_id"], report_user_id=member.id, content=body["content"],
                            count=1, create_date=now, updated_at=now)
            session.add(report)
        else:
            report.count = (report.count or 0) + 1
            report.content = body["content"]
            report.updated_at = now
            # A new report after a resolution opens the case again.
            report.resolved_at = None
        await session.flush()
        reporters = await distinct_reporters(session, body["member_id"])
    threshold = api.api.report_threshold
    if threshold and reporters >= threshold:
        await block_member_lives(api, body["member_id"], "reported: pending review", "reports")
    log.info("member %d reported member %d (%d distinct reporters)", member.id, body["member_id"], reporters)
    return json_response({
        "id": report.id,
        "reported_member_id": body["member_id"],
        "content": report.content,
        "count": report.count,
        "create_date": iso(report.create_date),
        "updated_at": iso(report.updated_at),
    }, 201)
