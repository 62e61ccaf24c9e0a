"""Access JWTs and refresh tokens: expiry, tampering, algorithm confusion,
`none`, revocation, reuse detection; bearer from the header only; login rate
limits; suspension."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from control_api.tokens import AccessTokens, TokenError, load_secret
from support.api import PASSWORD, admin_token, api, start_harness  # noqa: F401


def _secret(api) -> bytes:
    return (api.data_dir / "jwt-secret").read_bytes().strip()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(member_id: int, **extra) -> dict:
    now = int(time.time())
    return {"sub": str(member_id), "iat": now, "exp": now + 600, "jti": "x" * 32, "iss": "livecast", "typ": "access",
            **extra}


async def test_valid_token_then_forged_ones_refused(api):
    member_id, token = await api.member("dora@example.com")
    assert (await api.call("GET", "/api/v1/me", token=token)).status == 200
    secret = _secret(api)

    forged = {
        "expired": jwt.encode(_claims(member_id, iat=int(time.time()) - 1000, exp=int(time.time()) - 100), secret,
                              algorithm="HS256"),
        "other secret": jwt.encode(_claims(member_id), b"k" * 48, algorithm="HS256"),
        "HS512 same secret": jwt.encode(_claims(member_id), secret, algorithm="HS512"),
        "none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims(member_id)) + ".",
        "None capitalised": _b64({"alg": "None", "typ": "JWT"}) + "." + _b64(_claims(member_id)) + ".",
        "no exp": jwt.encode({k: v for k, v in _claims(member_id).items() if k != "exp"}, secret, algorithm="HS256"),
        "no jti": jwt.encode({k: v for k, v in _claims(member_id).items() if k != "jti"}, secret, algorithm="HS256"),
        "not an access token": jwt.encode(_claims(member_id, typ="refresh"), secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }
    # Tampered: the payload changed to another member, the signature kept.
    head, _, sig = token.split(".")
    forged["tampered"] = f"{head}.{_b64(_claims(member_id + 1))}.{sig}"
    # A flipped signature character.
    forged["bad signature"] = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for name, bad in forged.items():
        r = await api.call("GET", "/api/v1/me", token=bad)
        assert r.status == 401, name
        assert r.body["error"] in ("invalid_token", "unauthorized"), name
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), name


def test_algorithm_is_pinned_unit(tmp_path):
    tokens = AccessTokens(load_secret("", tmp_path), ttl_s=60)
    good = tokens.issue(7)
    assert tokens.verify(good).member_id == 7
    # RS256/HS256 confusion: a header naming another algorithm is refused
    # before any key is looked at.
    head = _b64({"alg": "RS256", "typ": "JWT"})
    _, payload, sig = good.split(".")
    with pytest.raises(TokenError):
        tokens.verify(f"{head}.{payload}.{sig}")
    expired = AccessTokens(load_secret("", tmp_path), ttl_s=60, clock=lambda: time.time() - 3600).issue(7)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(expired)
    with pytest.raises(ValueError):
        load_secret("short", tmp_path)


async def test_token_only_from_authorization_header(api):
    _, token = await api.member("erin@example.com")
    r = await api.call("GET", f"/api/v1/me?access_token={token}")
    assert r.status == 401
    r = await api.call("GET", f"/api/v1/me?token={token}")
    assert r.status == 401
    r = await api.call("GET", "/api/v1/me", headers={"Cookie": f"access_token={token}"})
    assert r.status == 401
    r = await api.call("GET", "/api/v1/me", headers={"Authorization": f"Basic {token}"})
    assert r.status == 401


async def test_refresh_rotates_and_reuse_revokes_family(api):
    await api.member("finn@example.com")
    login = await api.call("POST", "/api/v1/auth/login", {"email": "finn@example.com", "password": PASSWORD})
    first = login.body["refresh_token"]
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": first})
    assert r.status == 200
    second = r.body["refresh_token"]
    assert second != first
    assert (await api.call("GET", "/api/v1/me", token=r.body["access_token"])).status == 200

    # The rotated token comes back: theft assumed, the family is revoked...
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": first})
    assert r.status == 401 and r.body["error"] == "token_reused"
    # ... so the legitimate successor is dead too.
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": second})
    assert r.status == 401

    # Another login (another family) is not affected by that.
    other = await api.call("POST", "/api/v1/auth/login", {"email": "finn@example.com", "password": PASSWORD})
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": other.body["refresh_token"]})
    assert r.status == 200
    # Logout revokes it.
    third = r.body["refresh_token"]
    assert (await api.call("POST", "/api/v1/auth/logout", {"refresh_token": third})).status == 204
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": third})
    assert r.status == 401
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": "made-up"})
    assert r.status == 401 and r.body["error"] == "invalid_token"


async def test_password_change_revokes_refresh_tokens(api):
    _, token = await api.member("gail@example.com")
    login = await api.call("POST", "/api/v1/auth/login", {"email": "gail@example.com", "password": PASSWORD})
    r = await api.call("POST", "/api/v1/me/password", {"current_password": "wrong one!", "new_password": "another pw 1"},
                       token=token)
    assert r.status == 403
    r = await api.call("POST", "/api/v1/me/password", {"current_password": PASSWORD, "new_password": "another pw 1"},
                       token=token)
    assert r.status == 204
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": login.body["refresh_token"]})
    assert r.status == 401 and r.body["error"] == "invalid_token"


async def test_login_rate_limited_per_account_and_address(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"login_attempts_per_minute": 3})
    try:
        await harness.member("hank@example.com")  # one attempt (the login inside)
        for _ in range(2):
            r = await harness.call("POST", "/api/v1/auth/login", {"email": "hank@example.com", "password": "wrong pw!"})
            assert r.status == 401 and r.body["error"] == "invalid_credentials"
        r = await harness.call("POST", "/api/v1/auth/login", {"email": "hank@example.com", "password": PASSWORD})
        assert r.status == 429 and r.body["error"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # The address is spent as well: another account is refused from here.
        r = await harness.call("POST", "/api/v1/auth/login", {"email": "ivy@example.com", "password": PASSWORD})
        assert r.status == 429
    finally:
        await stop()


async def test_suspended_member_cannot_log_in_or_act(api, admin_token):
    admin_id, admin = admin_token
    member_id, token = await api.member("jack@example.com")
    created = await api.room(token)
    live_id = created["live"]["live_id"]
    r = await api.call("POST", f"/api/v1/admin/members/{member_id}/suspend", token=admin)
    assert r.status == 200 and r.body["blocked_lives"] == [live_id]
    assert (live_id, "producer suspended") in api.drops
    r = await api.call("GET", "/api/v1/me", token=token)
    assert r.status == 403 and r.body["error"] == "suspended"
    r = await api.call("POST", "/api/v1/auth/login", {"email": "jack@example.com", "password": PASSWORD})
    assert r.status == 403 and r.body["error"] == "suspended"
    r = await api.call("POST", f"/api/v1/admin/members/{member_id}/unsuspend", {"unblock_lives": True}, token=admin)
    assert r.status == 200 and r.body["unblocked_lives"] == [live_id]
    r = await api.call("POST", "/api/v1/auth/login", {"email": "jack@example.com", "password": PASSWORD})
    assert r.status == 200
    r = await api.call("POST", f"/api/v1/admin/members/{admin_id}/suspend", token=admin)
    assert r.status == 400


async def test_create_admin_creates_or_promotes(api):
    from control_api import create_admin

    member_id, token = await api.member("promote@example.com", verified=False)
    assert await create_admin(api.db, "Promote@example.com", "new admin pw", "boss") == member_id
    r = await api.call("POST", "/api/v1/auth/login", {"email": "promote@example.com", "password": "new admin pw"})
    assert r.status == 200 and r.body["member"]["role"] == "admin" and r.body["member"]["email_verified"] is True
    assert (await api.call("GET", "/api/v1/admin/members", token=r.body["access_token"])).status == 200
    with pytest.raises(ValueError):
        await create_admin(api.db, "not an email", "new admin pw", "boss")


def test_rate_limiter_window_and_bounded_memory():
    from control_api.ratelimit import RateLimiter

    now = [1000.0]
    limiter = RateLimiter(2, 60.0, max_keys=3, clock=lambda: now[0])
    assert limiter.check_and_hit("a") == 0 and limiter.check_and_hit("a") == 0
    assert limiter.check_and_hit("a") == 60.0
    now[0] += 30
    assert limiter.retry_after("a") == 30.0
    now[0] += 30.5
    assert limiter.check_and_hit("a") == 0
    for key in ("b", "c", "d", "e"):
        limiter.hit(key)
    assert len(limiter) == 3   # the oldest keys are forgotten, memory stays bounded


async def test_signup_and_mail_requests_rate_limited_with_retry_after(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"signups_per_hour": 2, "mails_per_hour": 2})
    try:
        for n in range(2):
            r = await harness.call("POST", "/api/v1/auth/signup",
                                   {"email": f"s{n}@example.com", "password": "long enough", "nickname": "s"})
            assert r.status == 201, r.text
        r = await harness.call("POST", "/api/v1/auth/signup",
                               {"email": "s9@example.com", "password": "long enough", "nickname": "s"})
        assert r.status == 429 and r.body["error"] == "rate_limited"
        assert 3000 < int(r.headers["Retry-After"]) <= 3600
        # Mails: per address and per mailbox, resend and reset share the budget.
        assert (await harness.call("POST", "/api/v1/auth/verify/resend", {"email": "s0@example.com"})).status == 202
        assert (await harness.call("POST", "/api/v1/auth/password-reset", {"email": "s0@example.com"})).status == 202
        for path in ("/api/v1/auth/verify/resend", "/api/v1/auth/password-reset"):
            r = await harness.call("POST", path, {"email": "s1@example.com"})
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        mails = list((harness.data_dir / "outbox").glob("*.eml"))
        assert len(mails) == 2 + 2   # two sign-ups, one resend, one reset: the refused ones sent nothing
    finally:
        await stop()


async def test_password_change_rate_limited(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"login_attempts_per_minute": 3})
    try:
        _, token = await harness.member("pat@example.com")   # the login is one attempt
        for _ in range(2):
            r = await harness.call("POST", "/api/v1/me/password",
                                   {"current_password": "wrong one!", "new_password": "another pw 1"}, token=token)
            assert r.status == 403
        r = await harness.call("POST", "/api/v1/me/password",
                               {"current_password": PASSWORD, "new_password": "another pw 1"}, token=token)
        assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    finally:
        await stop()


async def test_login_without_verification_when_not_required(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"require_verified_email": False})
    try:
        r = await harness.call("POST", "/api/v1/auth/signup",
                               {"email": "u@example.com", "password": "long enough", "nickname": "u"})
        assert r.status == 201
        r = await harness.call("POST", "/api/v1/auth/login", {"email": "u@example.com", "password": "long enough"})
        assert r.status == 200
        token = r.body["access_token"]
        assert (await harness.call("POST", "/api/v1/rooms", {"room_title": "t"}, token=token)).status == 201
        # Reporting still needs a verified address.
        other, _ = await harness.member("other@example.com")
        r = await harness.call("POST", "/api/v1/reports", {"member_id": other, "content": "x"}, token=token)
        assert r.status == 403 and r.body["error"] == "email_not_verified"
    finally:
        await stop()


def test_rate_limiter_prunes_expired_keys():
    from control_api.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(5, 60.0, max_keys=1000, clock=lambda: now[0])
    for n in range(500):
        limiter.hit(f"addr{n}")
    assert len(limiter) == 500
    now[0] += 30
    limiter.hit("late")
    assert len(limiter) == 501   # nothing expired yet
    now[0] += 31
    limiter.hit("later")
    # Every key whose last hit left the window is gone; "late" still counts.
    assert len(limiter) == 2 and limiter.retry_after("late") == 0
    now[0] += 61
    assert limiter.prune() == 2 and len(limiter) == 0
    # A flood of fresh keys never grows the table past max_keys.
    for n in range(5000):
        limiter.hit(f"flood{n}")
    assert len(limiter) == 1000
