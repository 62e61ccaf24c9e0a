"""Hostile input: malformed JSON, wrong types, unknown fields, oversized
bodies and fields; JSON problems for every /api/ error and nothing changed
for other routes; strict CORS."""
from __future__ import annotations

import asyncio
import contextlib

from support.api import api, start_harness  # noqa: F401


def _problem(r, status: int, code: str | None = None) -> None:
    assert r.status == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert set(r.body) == {"error", "message", "fields"}
    if code is not None:
        assert r.body["error"] == code, r.body


async def test_malformed_and_wrong_types(api):
    url = "/api/v1/auth/signup"
    json_header = {"Content-Type": "application/json"}
    for raw in (b"{", b"not json", b"\xff\xfe{}", b'{"email": "a@b.cd",}', b"[" * 100_00):
        r = await api.call("POST", url, data=raw, headers=json_header)
        _problem(r, 400, "malformed_json")
    r = await api.call("POST", url, data=b"[1, 2]", headers=json_header)
    _problem(r, 400, "validation_failed")
    r = await api.call("POST", url, json={"email": 5, "password": ["x"], "nickname": None})
    _problem(r, 400, "validation_failed")
    assert r.body["fields"] == {"email": "must be a string", "password": "must be a string",
                                "nickname": "must be a string"}
    r = await api.call("POST", url, json={"email": "not-an-email", "password": "short", "nickname": "",
                                          "role": "admin", "email_verified_at": "now"})
    _problem(r, 400)
    assert set(r.body["fields"]) == {"email", "password", "nickname", "role", "email_verified_at"}
    assert r.body["fields"]["role"] == "unknown field"
    r = await api.call("POST", url, json={})
    assert r.body["fields"] == {"email": "required", "password": "required", "nickname": "required"}
    # Oversized fields.
    r = await api.call("POST", url, json={"email": "a" * 250 + "@b.cd", "password": "p" * 129,
                                          "nickname": "n" * 65})
    assert set(r.body["fields"]) == {"email", "password", "nickname"}
    # Control characters in a nickname forge log lines.
    r = await api.call("POST", url, json={"email": "ok@example.com", "password": "long enough", "nickname": "a\nb"})
    assert set(r.body["fields"]) == {"nickname"}
    # A form post is not JSON.
    r = await api.call("POST", url, data={"email": "x@example.com"})
    _problem(r, 415)
    # Booleans are not integers.
    _, token = await api.member("val@example.com")
    r = await api.call("POST", "/api/v1/reports", {"member_id": True, "content": "x"}, token=token)
    assert r.body["fields"] == {"member_id": "must be an integer"}
    r = await api.call("PUT", "/api/v1/lives/1/options", {"passthrough_only": "yes"}, token=token)
    assert r.status in (400, 404)
    r = await api.call("GET", "/api/v1/rooms?limit=1000")
    _problem(r, 400)
    r = await api.call("GET", "/api/v1/rooms?offset=-1")
    _problem(r, 400)
    assert len(api.inbox.messages) == 0


async def test_oversized_body(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, http={"max_body_bytes": 1024})
    try:
        big = {"email": "a@example.com", "password": "x" * 2000, "nickname": "n"}
        r = await harness.call("POST", "/api/v1/auth/signup", big)
        _problem(r, 413, "payload_too_large")

        async def chunked():
            for _ in range(10):
                yield b" " * 200
        r = await harness.call("POST", "/api/v1/auth/signup", data=chunked(),
                               headers={"Content-Type": "application/json"})
        _problem(r, 413, "payload_too_large")
    finally:
        await stop()


async def test_problem_json_only_under_api(api):
    r = await api.call("GET", "/api/v1/nothing-here")
    _problem(r, 404, "not_found")
    r = await api.call("DELETE", "/api/v1/streams")
    _problem(r, 405, "method_not_allowed")
    r = await api.call("GET", "/api/v1/rooms/UPPER")
    _problem(r, 404)
    r = await api.call("GET", "/api/v1/rooms")
    assert r.headers["Cache-Control"] == "no-store"
    # Other routes of the same app are left alone.
    r = await api.call("GET", "/live/abc/master.m3u8", headers={"Origin": "https://evil.example"})
    assert r.status == 200 and r.text == "not the api"
    assert "Access-Control-Allow-Origin" not in r.headers and "Cache-Control" not in r.headers
    r = await api.call("GET", "/not-api")
    assert r.status == 404 and not r.text.startswith("{")


async def test_cors_allow_list(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"cors_origins": ["https://app.example"]})
    try:
        ok = {"Origin": "https://app.example"}
        r = await harness.call("GET", "/api/v1/rooms", headers=ok)
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Access-Control-Allow-Credentials" not in r.headers and "Origin" in r.headers["Vary"]
        r = await harness.call("OPTIONS", "/api/v1/rooms", headers={**ok, "Access-Control-Request-Method": "POST",
                                                                   "Access-Control-Request-Headers": "authorization"})
        assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        # Errors carry CORS headers too, so the page can read them.
        r = await harness.call("GET", "/api/v1/me", headers=ok)
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        evil = {"Origin": "https://evil.example"}
        r = await harness.call("GET", "/api/v1/rooms", headers=evil)
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
        r = await harness.call("OPTIONS", "/api/v1/rooms", headers={**evil, "Access-Control-Request-Method": "POST"})
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        await stop()


async def test_cors_star_is_never_sent(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, api={"cors_origins": ["*"]})
    try:
        r = await harness.call("GET", "/api/v1/rooms", headers={"Origin": "https://any.example"})
        assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        await stop()


async def test_mail_failure_does_not_lose_the_signup(tmp_path):
    # An SMTP port nobody listens on: the account is kept, the mail reported failed.
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    harness, stop = await start_harness(tmp_path, smtp=False, mail={"smtp_host": "127.0.0.1", "smtp_port": port})
    try:
        r = await asyncio.wait_for(harness.call("POST", "/api/v1/auth/signup",
                                                {"email": "m@example.com", "password": "long enough", "nickname": "m"}), 20)
        assert r.status == 201 and r.body["verification_mail"] == "failed"
        r = await harness.call("POST", "/api/v1/auth/signup",
                               {"email": "M@example.com", "password": "long enough", "nickname": "m"})
        _problem(r, 409, "email_taken")
    finally:
        await stop()


async def test_body_limit_on_every_route_even_without_a_body(tmp_path):
    harness, stop = await start_harness(tmp_path, smtp=False, http={"max_body_bytes": 1024})
    try:
        big = b"x" * 2048

        async def chunked():
            for _ in range(10):
                yield b" " * 200
        cases = [("GET", "/api/v1/rooms"), ("GET", "/api/v1/streams"), ("DELETE", "/api/v1/rooms/abc"),
                 ("POST", "/api/v1/lives/1/key"), ("GET", "/api/v1/no-such-route")]
        for method, path in cases:
            r = await harness.call(method, path, data=big, headers={"Content-Type": "application/json"})
            _problem(r, 413, "payload_too_large")
            # No Content-Length: counted as it arrives.
            r = await harness.call(method, path, data=chunked(), headers={"Content-Type": "application/json"})
            _problem(r, 413, "payload_too_large")
        # A body within the limit on a route that takes none is ignored.
        r = await harness.call("GET", "/api/v1/rooms", data=b"{}", headers={"Content-Type": "application/json"})
        assert r.status == 200
    finally:
        await stop()


async def test_slow_body_times_out():
    # The middleware on its own, in a real server, with a short deadline.
    import aiohttp
    from aiohttp import web

    from control_api.errors import problem_middleware
    from control_api.validation import Field, body_limit_middleware, read_json

    async def echo(request):
        return web.json_response(await read_json(request, {"a": Field(int)}, 1024))
    app = web.Application(middlewares=[problem_middleware, body_limit_middleware(1024, timeout_s=0.3)])
    app.router.add_post("/api/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        rest_sent = False
        release = asyncio.Event()

        async def trickle():
            nonlocal rest_sent
            yield b'{"a":'
            with contextlib.suppress(TimeoutError):  # the rest only once the answer is in
                async with asyncio.timeout(30):
                    await release.wait()
            rest_sent = True
            yield b"1}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/api/echo", data=b'{"a": 1}',
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200 and await r.json() == {"a": 1}
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with http.post(f"http://127.0.0.1:{port}/api/echo", data=trickle(),
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status == 408 and (await r.json())["error"] == "request_timeout"
                # Answered by the body deadline while the body was still incomplete.
                assert not rest_sent
            release.set()
            assert loop.time() - started >= 0.3  # not before the deadline
    finally:
        await runner.cleanup()


async def test_problem_json_for_unknown_routes_and_methods(api):
    for path in ("/api", "/api/", "/api/v2/rooms", "/api/v1/rooms/abc/nothing", "/api/v1/lives/not-a-number"):
        r = await api.call("GET", path)
        _problem(r, 404, "not_found")
    for method, path in (("PUT", "/api/v1/rooms"), ("POST", "/api/v1/streams"), ("GET", "/api/v1/auth/login"),
                         ("DELETE", "/api/v1/me")):
        r = await api.call(method, path)
        _problem(r, 405, "method_not_allowed")
        assert r.headers.get("Allow"), (method, path)
