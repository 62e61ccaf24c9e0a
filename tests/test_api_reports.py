"""Reports: counting, self-report refused, the distinct-reporter threshold
blocking the reported member's lives, the hourly limit, the admin view."""
from __future__ import annotations

from sqlalchemy import select

from storage.models import Live, Report
from support.api import admin_token, api, start_harness  # noqa: F401


async def test_counting_self_report_threshold_and_admin_view(api, admin_token):
    _, admin = admin_token
    target, target_token = await api.member("target@example.com", nickname="target")
    created = await api.room(target_token)
    live_id = created["live"]["live_id"]
    r1, t1 = await api.member("r1@example.com")
    r2, t2 = await api.member("r2@example.com")
    r3, t3 = await api.member("r3@example.com")

    r = await api.call("POST", "/api/v1/reports", {"member_id": target, "content": "rude"}, token=t1)
    assert r.status == 201 and r.body["count"] == 1
    r = await api.call("POST", "/api/v1/reports", {"member_id": target, "content": "still rude"}, token=t1)
    assert r.status == 201 and r.body["count"] == 2 and r.body["content"] == "still rude"
    r = await api.call("POST", "/api/v1/reports", {"member_id": r1, "content": "me"}, token=t1)
    assert r.status == 400 and "member_id" in r.body["fields"]
    r = await api.call("POST", "/api/v1/reports", {"member_id": 10**9, "content": "ghost"}, token=t1)
    assert r.status == 404
    r = await api.call("POST", "/api/v1/reports", {"member_id": target, "content": "x" * 101}, token=t1)
    assert r.status == 400 and "content" in r.body["fields"]
    async with api.db.session() as session:
        [row] = (await session.execute(select(Report).where(Report.reported_user_id == target))).scalars().all()
        assert row.count == 2 and row.content == "still rude"

    # Two reports from one member do not reach a threshold of 3.
    r = await api.call("POST", "/api/v1/reports", {"member_id": target, "content": "bad"}, token=t2)
    assert r.status == 201
    assert api.drops == []
    # A second report of someone else, by r3: r2 is reported once.
    r = await api.call("POST", "/api/v1/reports", {"member_id": r2, "content": "meh"}, token=t3)
    assert r.status == 201
    async with api.db.session() as session:
        assert (await session.get(Live, live_id)).live_state == "idle"
    # Third distinct reporter: the target's lives are blocked, publisher dropped.
    r = await api.call("POST", "/api/v1/reports", {"member_id": target, "content": "awful"}, token=t3)
    assert r.status == 201
    assert api.drops == [(live_id, "reported: pending review")]
    async with api.db.session() as session:
        assert (await session.get(Live, live_id)).live_state == "blocked"
    # A moderation block: the producer cannot lift it.
    r = await api.call("PUT", f"/api/v1/lives/{live_id}/state", {"live_state": "idle"}, token=target_token)
    assert r.status == 403 and r.body["error"] == "moderation_block"
    # Admins see the most-reported member first.
    r = await api.call("GET", "/api/v1/admin/reports", token=admin)
    assert r.status == 200
    groups = r.body["groups"]
    assert [g["member"]["id"] for g in groups] == [target, r2]
    assert groups[0]["distinct_reporters"] == 3 and groups[0]["total_count"] == 4
    assert groups[0]["threshold_reached"] is True
    assert groups[0]["lives"] == [{"live_id": live_id, "room_id": created["room"]["room_id"], "live_state": "blocked"}]
    assert {rep["reporter_id"] for rep in groups[0]["reports"]} == {r1, r2, r3}

    r = await api.call("POST", f"/api/v1/admin/reports/{target}/resolve", {"unblock_lives": True}, token=admin)
    assert r.status == 200 and r.body["resolved"] == 3 and r.body["unblocked_lives"] == [live_id]
    r = await api.call("GET", "/api/v1/admin/reports", token=admin)
    assert [g["member"]["id"] for g in r.body["groups"]] == [r2]
    r = await api.call("GET", "/api/v1/admin/reports?include_resolved=true", token=admin)
    assert [g["member"]["id"] for g in r.body["groups"]] == [target, r2]
    async with api.db.session() as session:
        assert (await session.get(Live, live_id)).live_state == "idle"


async def test_reports_per_hour_limit(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"reports_per_hour": 2, "report_threshold": 0})
    try:
        a, _ = await harness.member("a@example.com")
        b, _ = await harness.member("b@example.com")
        _, token = await harness.member("reporter@example.com")
        assert (await harness.call("POST", "/api/v1/reports", {"member_id": a, "content": "1"}, token=token)).status == 201
        assert (await harness.call("POST", "/api/v1/reports", {"member_id": a, "content": "2"}, token=token)).status == 201
        r = await harness.call("POST", "/api/v1/reports", {"member_id": b, "content": "3"}, token=token)
        assert r.status == 429 and r.body["error"] == "rate_limited"
        assert 3000 < int(r.headers["Retry-After"]) <= 3600
        async with harness.db.session() as session:
            rows = (await session.execute(select(Report))).scalars().all()
            assert [(row.reported_user_id, row.count) for row in rows] == [(a, 2)]
    finally:
        await stop()


async def test_admin_blocks_any_live(api, admin_token):
    _, admin = admin_token
    _, token = await api.member("owner@example.com")
    live_id = (await api.room(token))["live"]["live_id"]
    r = await api.call("PUT", f"/api/v1/admin/lives/{live_id}/state", {"live_state": "blocked"}, token=admin)
    assert r.status == 200 and r.body["live_state"] == "blocked" and r.body["publisher_dropped"] is True
    assert api.drops[-1][0] == live_id
    r = await api.call("GET", "/api/v1/admin/lives?live_state=blocked", token=admin)
    assert [live["live_id"] for live in r.body["lives"]] == [live_id]
    r = await api.call("PUT", f"/api/v1/lives/{live_id}/state", {"live_state": "idle"}, token=token)
    assert r.status == 403 and r.body["error"] == "moderation_block"
    r = await api.call("PUT", f"/api/v1/admin/lives/{live_id}/state", {"live_state": "live"}, token=admin)
    assert r.status == 400
    r = await api.call("PUT", "/api/v1/admin/lives/999999/state", {"live_state": "idle"}, token=admin)
    assert r.status == 404
    r = await api.call("PUT", f"/api/v1/admin/lives/{live_id}/state", {"live_state": "idle"}, token=admin)
    assert r.status == 200 and r.body["live_state"] == "idle"


async def test_admin_listing_orders_by_distinct_reporters_not_counts(api, admin_token):
    _, admin = admin_token
    loud, _ = await api.member("loud@example.com")      # one reporter, many times, most recently
    crowd, _ = await api.member("crowd@example.com")    # two reporters, once each, earlier
    _, t1 = await api.member("x1@example.com")
    _, t2 = await api.member("x2@example.com")
    for who, token in ((crowd, t1), (crowd, t2)):
        assert (await api.call("POST", "/api/v1/reports", {"member_id": who, "content": "c"}, token=token)).status == 201
    for _ in range(5):
        assert (await api.call("POST", "/api/v1/reports", {"member_id": loud, "content": "l"}, token=t1)).status == 201
    r = await api.call("GET", "/api/v1/admin/reports", token=admin)
    groups = r.body["groups"]
    assert [(g["member"]["id"], g["distinct_reporters"], g["total_count"]) for g in groups] == [(crowd, 2, 2),
                                                                                              (loud, 1, 5)]
    # Five reports by one member reach no threshold of 3.
    assert api.drops == [] and not groups[1]["threshold_reached"]
