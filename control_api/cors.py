"""CORS for the control API (Fetch standard, "CORS protocol").

Strict allow-list: an Origin listed in config.api.cors_origins gets itself
echoed back (never `*`), with `Vary: Origin` so caches keep answers apart.
No `Access-Control-Allow-Credentials`: the API authenticates with the
Authorization header, never cookies, so a browser has no ambient credential to
send. Unlisted origins get no CORS headers at all and the browser blocks the
read; same-origin pages need none. Only /api/ paths are touched.
"""
from __future__ import annotations

from aiohttp import web

from control_api.errors import is_api_path, problem

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type"
# Browsers cap this anyway (Chromium at 2 h); 10 min keeps policy changes quick.
PREFLIGHT_MAX_AGE_S = 600


def cors_middleware(allowed_origins: list[str]):
    allowed = frozenset(o.rstrip("/") for o in allowed_origins if o and o != "*")

    @web.middleware
    async def middleware(request: web.Request, handler):
        if not is_api_path(request.path):
            return await handler(request)
        origin = request.headers.get("Origin")
        ok = origin is not None and origin in allowed
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not ok:
                response = problem(403, "cors_refused", "origin not allowed")
                response.headers["Vary"] = "Origin"
                return response
            response = web.Response(status=204)
            response.headers.update({
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                "Vary": "Origin",
            })
            return response
        response = await handler(request)
        if ok:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        if "Vary" not in response.headers:
            response.headers["Vary"] = "Origin"
        return response

    return middleware
