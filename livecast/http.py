"""HTTP routes every livecast process serves: /healthz and /metrics."""
from __future__ import annotations

from typing import Callable

from aiohttp import web

from livecast.metrics import METRICS, metrics_handler

HEALTH = web.AppKey("health", object)


async def healthz(request: web.Request) -> web.Response:
    report = request.app[HEALTH]()
    return web.json_response(report, headers={"Cache-Control": "no-store"})


def add_service_routes(app: web.Application, health: Callable[[], dict], metric_families: Callable[[], list]) -> None:
    app[HEALTH] = health
    app[METRICS] = metric_families
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
