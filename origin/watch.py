"""The player page, /watch/<room_id>, and the scripts it loads.

hls.js comes from npm (installed by the set-up into node_modules, not
committed) and is served from here so the page works on a closed network.
"""
from __future__ import annotations

import asyncio
import html
from pathlib import Path

from aiohttp import web

from storage.database import Database
from storage.models import Room

STATIC = Path(__file__).resolve().parent / "static"
HLS_JS = Path(__file__).resolve().parent.parent / "node_modules" / "hls.js" / "dist" / "hls.min.js"
WATCH_DB = web.AppKey("watch_db", Database)


async def watch_page(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    async with request.app[WATCH_DB].session() as session:
        room = await session.get(Room, room_id) if len(room_id) <= 32 else None
    if room is None:
        raise web.HTTPNotFound(text="no such room", content_type="text/plain")
    # Audit: no file read on the event loop per request.
    page = await asyncio.to_thread((STATIC / "watch.html").read_text)
    page = page.replace("{{title}}", html.escape(room.room_title)).replace("{{room_id}}", html.escape(room_id))
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def hls_js(request: web.Request) -> web.StreamResponse:
    if not await asyncio.to_thread(HLS_JS.is_file):  # audit: no stat on the loop
        raise web.HTTPNotFound(text="hls.js is not installed: run ./scripts/setup.sh", content_type="text/plain")
    return web.FileResponse(HLS_JS, headers={"Cache-Control": "public, max-age=3600"})


async def watch_js(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "watch.js", headers={"Cache-Control": "no-cache"})


def add_watch_routes(app: web.Application, db: Database) -> None:
    app[WATCH_DB] = db
    app.router.add_get("/watch/{room_id}", watch_page)
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get("/static/watch.js", watch_js)
