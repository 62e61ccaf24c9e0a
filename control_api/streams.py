"""GET /api/v1/streams: the lives on air right now, from the ingest."""
from __future__ import annotations

import logging

from aiohttp import web

from control_api.context import get_api
from control_api.errors import json_response

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/api/v1/streams")
async def list_streams(request: web.Request) -> web.Response:
    api = get_api(request)
    streams = []
    for s in api.ctx.streams():
        room_id = s.get("room_id")
        if not room_id:
            continue  # not yet mapped to a room: nothing a viewer could open
        # Fields copied one by one: whatever else the ingest keeps (remote
        # addresses, anything key-like) never leaks into a public answer.
        streams.append({
            "room_id": room_id,
            "live_id": s.get("live_id"),
            "started_at": s.get("started_at"),
            "renditions": list(s.get("renditions") or []),
            "bitrate_kbps": s.get("bitrate_kbps"),
            "fps": s.get("fps"),
            "codecs": s.get("codecs"),
            "playlist_url": api.public(f"/live/{room_id}/master.m3u8"),
            "watch_url": api.public(f"/watch/{room_id}"),
            "thumbnail_url": api.ctx.thumbnail_url(room_id),
        })
    return json_response({"streams": streams})
