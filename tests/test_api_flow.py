"""The control API end to end over HTTP: sign-up with a real SMTP server,
verification, login, rooms, keys, block/unblock, producers, streams, the
outbox mode, password reset, OpenAPI coverage, and no stream key leaks."""
from __future__ import annotations

import json
import os
import stat

from sqlalchemy import select

from control_api.openapi import DOCUMENT
from storage.keys import key_digest
from storage.lives import compare_and_set
from storage.models import Live
from support.api import PASSWORD, api, assert_no_key_leak, mail_token, registered_api_routes, start_harness  # noqa: F401


async def test_signup_verify_login_room_rotate_block(api):
    r = await api.call("POST", "/api/v1/auth/signup",
                       {"email": "Alice@Example.com", "password": "s3cret-enough", "nickname": "alice"})
    assert r.status == 201, r.text
    assert r.body["verification_mail"] == "sent"
    assert r.body["member"]["email"] == "alice@example.com"
    assert r.body["member"]["email_verified"] is False

    # Not verified yet: login refused.
    r = await api.call("POST", "/api/v1/auth/login", {"email": "alice@example.com", "password": "s3cret-enough"})
    assert r.status == 403 and r.body["error"] == "email_not_verified"

    [mail] = await api.inbox.wait_for(1)
    assert mail["To"] == "alice@example.com"
    assert "s3cret-enough" not in mail.as_string()
    token = mail_token(mail)
    link = f"http://viewer.test/api/v1/auth/verify?token={token}"
    assert link in mail.get_content()
    r = await api.call("GET", f"/api/v1/auth/verify?token={token}")
    assert r.status == 200 and r.body["verified"] is True
    # Single use.
    r = await api.call("POST", "/api/v1/auth/verify", {"token": token})
    assert r.status == 400 and r.body["error"] == "invalid_token"

    r = await api.call("POST", "/api/v1/auth/login", {"email": "ALICE@example.com", "password": "s3cret-enough"})
    assert r.status == 200, r.text
    access = r.body["access_token"]
    assert r.body["token_type"] == "Bearer" and r.body["refresh_token"]

    r = await api.call("GET", "/api/v1/me", token=access)
    assert r.status == 200 and r.body["email_verified"] is True and "password_hash" not in r.text

    r = await api.call("POST", "/api/v1/rooms", {"room_title": "Alice live", "room_info": "cooking\nshow"}, token=access)
    assert r.status == 201, r.text
    room_id = r.body["room"]["room_id"]
    live = r.body["live"]
    key1 = live["stream_key"]
    assert live["live_state"] == "idle" and live["rtmp_url"] == "rtmp://127.0.0.1:1935/live"
    assert live["publish_url"] == f"rtmp://127.0.0.1:1935/live/{key1}"
    assert r.body["room"]["watch_url"] == f"http://viewer.test/watch/{room_id}"
    assert r.body["room"]["playlist_url"] == f"http://viewer.test/live/{room_id}/master.m3u8"
    live_id = live["live_id"]
    async with api.db.session() as session:
        row = await session.get(Live, live_id)
        assert row.live_key == key_digest(key1)   # only the digest is stored

    r = await api.call("GET", f"/api/v1/rooms/{room_id}/live", token=access)
    assert r.status == 200 and r.body["stream_key"] is None and r.body["stream_key_hidden"] is True

    r = await api.call("POST", f"/api/v1/lives/{live_id}/key", token=access)
    assert r.status == 200, r.text
    key2 = r.body["stream_key"]
    assert key2 != key1 and api.drops == [(live_id, "key rotated")]
    async with api.db.session() as session:
        assert (await session.get(Live, live_id)).live_key == key_digest(key2)

    r = await api.call("PUT", f"/api/v1/lives/{live_id}/state", {"live_state": "blocked"}, token=access)
    assert r.status == 200 and r.body["live_state"] == "blocked"
    assert api.drops[-1] == (live_id, "blocked by producer")
    r = await api.call("PUT", f"/api/v1/lives/{live_id}/state", {"live_state": "idle"}, token=access)
    assert r.status == 200 and r.body["live_state"] == "idle"

    # Options: default false, settable.
    r = await api.call("GET", f"/api/v1/lives/{live_id}/options", token=access)
    assert r.body == {"live_id": live_id, "passthrough_only": False}
    r = await api.call("PUT", f"/api/v1/lives/{live_id}/options", {"passthrough_only": True}, token=access)
    assert r.status == 200 and r.body["passthrough_only"] is True

    # On air (as the ingest would set it): listed, can't be set idle or deleted.
    async with api.db.session() as session, session.begin():
        assert await compare_and_set(session, live_id, ("idle",), "live")
    api.on_air.append({"live_id": live_id, "room_id": room_id, "started_at": "2024-01-01T00:00:00Z",
                       "renditions": ["source", "480p"], "bitrate_kbps": 2500, "fps": 30, "codecs": "avc1,mp4a",
                       "remote": "10.0.0.1", "key": "never-shown"})
    r = await api.call("GET", "/api/v1/streams")
    assert r.status == 200
    [stream] = r.body["streams"]
    assert stream["room_id"] == room_id and stream["renditions"] == ["source", "480p"]
    assert stream["playlist_url"] == f"http://viewer.test/live/{room_id}/master.m3u8"
    assert "never-shown" not in r.text and "10.0.0.1" not in r.text
    r = await api.call("GET", "/api/v1/rooms")
    assert r.body["rooms"][0]["room_id"] == room_id and r.body["rooms"][0]["live"] is True
    assert r.body["rooms"][0]["viewer_count"] == 0
    assert r.body["rooms"][0]["thumbnail_url"].endswith(f"/live/{room_id}/thumbnail.jpg")
    r = await api.call("PUT", f"/api/v1/lives/{live_id}/state", {"live_state": "idle"}, token=access)
    assert r.status == 409 and r.body["error"] == "live_on_air"
    r = await api.call("DELETE", f"/api/v1/rooms/{room_id}", token=access)
    assert r.status == 409
    async with api.db.session() as session, session.begin():
        assert await compare_and_set(session, live_id, ("live",), "idle")
    r = await api.call("PATCH", f"/api/v1/rooms/{room_id}", {"room_title": "Renamed"}, token=access)
    assert r.status == 200 and r.body["room_title"] == "Renamed"
    r = await api.call("DELETE", f"/api/v1/rooms/{room_id}", token=access)
    assert r.status == 204
    r = await api.call("GET", f"/api/v1/rooms/{room_id}")
    assert r.status == 404 and r.body["error"] == "not_found"
    async with api.db.session() as session:
        assert (await session.execute(select(Live).where(Live.live_id == live_id))).first() is None

    assert assert_no_key_leak(api) == 2


async def test_producers_add_remove_last(api):
    alice, a_token = await api.member("alice@example.com", nickname="alice")
    bob, b_token = await api.member("bob@example.com", nickname="bob")
    created = await api.room(a_token)
    room_id, live_id = created["room"]["room_id"], created["live"]["live_id"]

    r = await api.call("POST", f"/api/v1/rooms/{room_id}/producers", {"email": "BOB@example.com"}, token=a_token)
    assert r.status == 201 and r.body["producer"]["id"] == bob
    r = await api.call("POST", f"/api/v1/rooms/{room_id}/producers", {"member_id": bob}, token=a_token)
    assert r.status == 409
    r = await api.call("POST", f"/api/v1/rooms/{room_id}/producers", {"member_id": bob, "email": "x@y.zz"}, token=a_token)
    assert r.status == 400
    r = await api.call("POST", f"/api/v1/rooms/{room_id}/producers", {"member_id": 999999}, token=a_token)
    assert r.status == 404
    # Bob is a co-producer now: he manages the live.
    r = await api.call("GET", f"/api/v1/lives/{live_id}", token=b_token)
    assert r.status == 200
    r = await api.call("GET", f"/api/v1/rooms/{room_id}")
    assert [p["id"] for p in r.body["producers"]] == [alice, bob] and "@" not in r.text
    r = await api.call("DELETE", f"/api/v1/rooms/{room_id}/producers/{alice}", token=b_token)
    assert r.status == 204
    r = await api.call("DELETE", f"/api/v1/rooms/{room_id}/producers/{bob}", token=b_token)
    assert r.status == 409 and r.body["error"] == "last_producer"
    r = await api.call("GET", f"/api/v1/lives/{live_id}", token=a_token)
    assert r.status == 403
    r = await api.call("GET", "/api/v1/me/rooms", token=b_token)
    assert [room["room_id"] for room in r.body["rooms"]] == [room_id]


async def test_outbox_mode_without_smtp(tmp_path, caplog):
    harness, stop = await start_harness(tmp_path, smtp=False)
    try:
        r = await harness.call("POST", "/api/v1/auth/signup",
                               {"email": "new@example.com", "password": "long enough pw", "nickname": "new"})
        assert r.status == 201 and r.body["verification_mail"] == "outbox"
        outbox = harness.data_dir / "outbox"
        [eml] = list(outbox.glob("*.eml"))
        assert stat.S_IMODE(os.stat(eml).st_mode) == 0o600
        assert str(eml) in caplog.text
        import email
        import email.policy
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["To"] == "new@example.com"
        r = await harness.call("POST", "/api/v1/auth/verify", {"token": mail_token(message)})
        assert r.status == 200
        r = await harness.call("POST", "/api/v1/auth/login", {"email": "new@example.com", "password": "long enough pw"})
        assert r.status == 200
        # The generated JWT secret is kept, private.
        secret = harness.data_dir / "jwt-secret"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600 and len(secret.read_bytes().strip()) >= 32
        assert "long enough pw" not in caplog.text
    finally:
        await stop()


async def test_password_reset_by_mail_revokes_logins(api):
    member_id, _ = await api.member("carol@example.com")
    login = await api.call("POST", "/api/v1/auth/login", {"email": "carol@example.com", "password": PASSWORD})
    r = await api.call("POST", "/api/v1/auth/password-reset", {"email": "carol@example.com"})
    assert r.status == 202
    # Unknown address: the same answer, no mail.
    r = await api.call("POST", "/api/v1/auth/password-reset", {"email": "nobody@example.com"})
    assert r.status == 202
    [mail] = await api.inbox.wait_for(1)
    token = mail_token(mail, "reset")
    r = await api.call("POST", "/api/v1/auth/password-reset/confirm", {"token": token, "new_password": "brand new pw"})
    assert r.status == 204
    r = await api.call("POST", "/api/v1/auth/password-reset/confirm", {"token": token, "new_password": "brand new pw"})
    assert r.status == 400
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": login.body["refresh_token"]})
    assert r.status == 401
    r = await api.call("POST", "/api/v1/auth/login", {"email": "carol@example.com", "password": PASSWORD})
    assert r.status == 401
    r = await api.call("POST", "/api/v1/auth/login", {"email": "carol@example.com", "password": "brand new pw"})
    assert r.status == 200 and r.body["member"]["id"] == member_id
    assert len(api.inbox.messages) == 1


async def test_openapi_matches_routes(api):
    r = await api.call("GET", "/api/v1/openapi.json")
    assert r.status == 200 and r.body["openapi"].startswith("3.")
    assert r.body == json.loads(json.dumps(DOCUMENT))
    documented = {(path, method.upper()) for path, item in r.body["paths"].items()
                  for method in item if method != "parameters"}
    # The registered routes, read from the running server's router.
    registered = registered_api_routes(api.app)
    assert registered, "no routes found"
    assert documented == registered


async def test_room_listing_filter_counts_what_it_lists(api):
    _, token = await api.member("lister@example.com")
    rooms = [await api.room(token, f"room {n}") for n in range(3)]
    on_air = rooms[1]
    async with api.db.session() as session, session.begin():
        assert await compare_and_set(session, on_air["live"]["live_id"], ("idle",), "live")
    r = await api.call("GET", "/api/v1/rooms?live=true")
    assert [room["room_id"] for room in r.body["rooms"]] == [on_air["room"]["room_id"]] and r.body["total"] == 1
    r = await api.call("GET", "/api/v1/rooms?limit=2")
    assert r.body["total"] == 3 and len(r.body["rooms"]) == 2
    assert r.body["rooms"][0]["room_id"] == on_air["room"]["room_id"]   # on air first
    r = await api.call("GET", "/api/v1/rooms?live=maybe")
    assert r.status == 400 and "live" in r.body["fields"]
