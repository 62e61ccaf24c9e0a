"""Small HTTP handlers of the composition root: /healthz."""
from __future__ import annotations

from aiohttp import web

HEALTH = web.AppKey("health", object)


async def healthz(request: web.Request) -> web.Response:
    report = request.app[HEALTH]()
    return web.json_response(report)
