"""The authorization table: every mutating route (and the private reads) as
anonymous, another member, the room's producer and an admin."""
from __future__ import annotations

from control_api.openapi import DOCUMENT
from support.api import PASSWORD, admin_token, api, assert_no_key_leak, registered_api_routes  # noqa: F401

ANON, OTHER, PRODUCER, ADMIN = "anonymous", "other", "producer", "admin"

# (method, path template, body, {role: expected status}); {room}, {live},
# {co} are filled per case: a fresh room per case so one role's success does
# not change what the next one sees. The producer goes last.
PRODUCER_ONLY = {ANON: 401, OTHER: 403, ADMIN: 403}
ADMIN_ONLY = {ANON: 401, OTHER: 403, PRODUCER: 403}
ANY_MEMBER = {ANON: 401}
TABLE = [
    ("PATCH", "/api/v1/rooms/{room}", {"room_title": "new"}, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("DELETE", "/api/v1/rooms/{room}", None, {**PRODUCER_ONLY, PRODUCER: 204}),
    ("GET", "/api/v1/rooms/{room}/producers", None, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("POST", "/api/v1/rooms/{room}/producers", {"member_id": "{co}"}, {**PRODUCER_ONLY, PRODUCER: 201}),
    ("DELETE", "/api/v1/rooms/{room}/producers/{co}", None, {**PRODUCER_ONLY, PRODUCER: 204}),
    ("GET", "/api/v1/rooms/{room}/live", None, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("GET", "/api/v1/lives/{live}", None, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("POST", "/api/v1/lives/{live}/key", None, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("PUT", "/api/v1/lives/{live}/state", {"live_state": "blocked"}, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("GET", "/api/v1/lives/{live}/options", None, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("PUT", "/api/v1/lives/{live}/options", {"passthrough_only": True}, {**PRODUCER_ONLY, PRODUCER: 200}),
    ("POST", "/api/v1/rooms", {"room_title": "mine"}, {**ANY_MEMBER, OTHER: 201, ADMIN: 201, PRODUCER: 201}),
    ("PATCH", "/api/v1/me", {"nickname": "renamed"}, {**ANY_MEMBER, OTHER: 200, ADMIN: 200, PRODUCER: 200}),
    ("GET", "/api/v1/me/rooms", None, {**ANY_MEMBER, OTHER: 200, ADMIN: 200, PRODUCER: 200}),
    ("POST", "/api/v1/reports", {"member_id": "{co}", "content": "spam"},
     {**ANY_MEMBER, OTHER: 201, ADMIN: 201, PRODUCER: 201}),
    ("GET", "/api/v1/admin/reports", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("POST", "/api/v1/admin/reports/{co}/resolve", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("GET", "/api/v1/admin/members", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("POST", "/api/v1/admin/members/{co}/suspend", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("POST", "/api/v1/admin/members/{co}/unsuspend", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("GET", "/api/v1/admin/lives", None, {**ADMIN_ONLY, ADMIN: 200}),
    ("PUT", "/api/v1/admin/lives/{live}/state", {"live_state": "blocked"}, {**ADMIN_ONLY, ADMIN: 200}),
    ("GET", "/api/v1/me", None, {**ANY_MEMBER, OTHER: 200, ADMIN: 200, PRODUCER: 200}),
    # Last: each role changes its own password (logins stay, access tokens too).
    ("POST", "/api/v1/me/password", {"current_password": PASSWORD, "new_password": "another password"},
     {**ANY_MEMBER, OTHER: 204, ADMIN: 204, PRODUCER: 204}),
]
# Public: answered to anyone.
PUBLIC = ["/api/v1/rooms", "/api/v1/rooms/{room}", "/api/v1/streams", "/api/v1/openapi.json", "/api/v1/members/{co}"]
# Public routes that act: no login needed, so tried anonymously only, with a
# body each accepts (or refuses for its own reason, never 401 "log in").
OPEN = [
    ("POST", "/api/v1/auth/signup", {"email": "new@example.com", "password": "long enough", "nickname": "n"}, 201),
    ("GET", "/api/v1/auth/verify?token=unknown", None, 400),
    ("POST", "/api/v1/auth/verify", {"token": "unknown"}, 400),
    ("POST", "/api/v1/auth/verify/resend", {"email": "new@example.com"}, 202),
    ("POST", "/api/v1/auth/login", {"email": "new@example.com", "password": "long enough"}, 403),  # unverified
    ("POST", "/api/v1/auth/refresh", {"refresh_token": "unknown"}, 401),
    ("POST", "/api/v1/auth/logout", {"refresh_token": "unknown"}, 401),
    ("POST", "/api/v1/auth/password-reset", {"email": "new@example.com"}, 202),
    ("POST", "/api/v1/auth/password-reset/confirm", {"token": "unknown", "new_password": "long enough"}, 400),
]
# The table's placeholders, as the router names them.
ROUTER_NAMES = {"{room}": "{room_id}", "{live}": "{live_id}", "{co}": "{member_id}"}


def _router_form(template: str) -> str:
    template = template.partition("?")[0]
    for ours, theirs in ROUTER_NAMES.items():
        template = template.replace(ours, theirs)
    return template


async def test_every_route_has_an_authorization_row(api):
    """A route added to the router without a row here (or in PUBLIC/OPEN)
    fails this test, and a row for a route that is gone does too."""
    covered = {(m, _router_form(t)) for m, t, _, _ in TABLE}
    covered |= {("GET", _router_form(t)) for t in PUBLIC}
    covered |= {(m, _router_form(t)) for m, t, _, _ in OPEN}
    registered = {(method, path) for path, method in registered_api_routes(api.app)}
    assert registered - covered == set(), "routes without an authorization row"
    assert covered - registered == set(), "rows for routes that do not exist"
    mutating = {r for r in registered if r[0] not in ("GET", "HEAD", "OPTIONS")}
    assert mutating <= {(m, _router_form(t)) for m, t, _, _ in TABLE + OPEN}
    # The OpenAPI document states the same roles the table proves.
    for method, template, _, expected in TABLE:
        role = "admin" if expected is ADMIN_ONLY or expected.get(PRODUCER) == 403 else \
            "producer" if expected.get(OTHER) == 403 else "member"
        operation = DOCUMENT["paths"][_router_form(template)][method.lower()]
        assert operation.get("x-role") == role, (method, template)
    for method, template, *_ in OPEN:
        assert "security" not in DOCUMENT["paths"][_router_form(template)][method.lower()], (method, template)


async def test_open_routes_need_no_login(api):
    for method, path, body, status in OPEN:
        r = await api.call(method, path, body)
        assert r.status == status, (method, path, r.text)


def _fill(value, names: dict):
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in names and "/" not in value:
            return int(names[value[1:-1]]) if value[1:-1] == "co" else value.format(**names)
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


async def test_authorization_table(api, admin_token):
    _, admin = admin_token
    _, other = await api.member("other@example.com")
    _, producer = await api.member("producer@example.com")
    co_id, _ = await api.member("co@example.com")
    tokens = {ANON: None, OTHER: other, ADMIN: admin, PRODUCER: producer}
    seen = set()
    for method, template, body, expected in TABLE:
        created = await api.room(producer)
        names = {"room": created["room"]["room_id"], "live": created["live"]["live_id"], "co": co_id}
        if template.endswith("/producers/{co}"):
            r = await api.call("POST", f"/api/v1/rooms/{names['room']}/producers", {"member_id": co_id}, token=producer)
            assert r.status == 201
        path = _fill(template, names)
        for role in (ANON, OTHER, ADMIN, PRODUCER):
            if role not in expected:
                continue
            r = await api.call(method, path, _fill(body, names) if body is not None else None, token=tokens[role])
            assert r.status == expected[role], (method, template, role, r.text)
            if r.status >= 400:
                assert set(r.body) == {"error", "message", "fields"}, (method, template, role)
        seen.add((method, template))
    assert len(seen) == len(TABLE)

    created = await api.room(producer)
    names = {"room": created["room"]["room_id"], "live": created["live"]["live_id"], "co": co_id}
    for template in PUBLIC:
        r = await api.call("GET", _fill(template, names))
        assert r.status == 200, template
    # Dozens of rooms made and keys rotated: no key anywhere else.
    assert assert_no_key_leak(api) > len(TABLE)


async def test_unverified_member_cannot_act(api):
    from control_api.context import API_KEY

    member_id, _ = await api.member("verified@example.com")
    async with api.db.session() as session, session.begin():
        from storage.models import Member
        member = await session.get(Member, member_id)
        member.email_verified_at = None
    # A token issued before (or while verification was not required).
    token = api.app[API_KEY].tokens.issue(member_id)
    r = await api.call("POST", "/api/v1/rooms", {"room_title": "x"}, token=token)
    assert r.status == 403 and r.body["error"] == "email_not_verified"
