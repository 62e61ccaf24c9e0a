"""HLS origin routes: multivariant and media playlists (with LL-HLS blocking
reload and delta updates) and the fMP4 files, with the headers a CDN needs.

Spec: draft-pantos-hls-rfc8216bis §6.2.5 (blocking reload, `_HLS_msn`,
`_HLS_part`, `_HLS_skip`), §6.2.6 (preload hints), App. B (cache times);
see shared/reference/ll-hls.md §4-§5.

    GET/HEAD /live/{room_id}/master.m3u8
    GET/HEAD /live/{room_id}/{rendition}/index.m3u8[?_HLS_msn=M[&_HLS_part=N]][&_HLS_skip=YES]
    GET/HEAD /live/{room_id}/{rendition}/{init-*.mp4|segN.m4s|segN.P.m4s}

The source of renditions is anything with `outputs(room_id)`, `store` and
`settings`: the in-process PackagingService, or origin/files.py's
FileOutputs (state files written by a packager in another process). The
latter replaces `out.playlist` on every reload, so waits re-read it.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
from email.utils import formatdate
from typing import TYPE_CHECKING

from aiohttp import web

from origin.viewers import ViewerCounter
from transcoder.rendition import RenditionOutput
from transcoder.thumbnails import THUMBNAIL_FILE
from transcoder.packaging import PackagingService
from transcoder.multivariant import Variant, render_multivariant
from transcoder.playlist import INIT_RE, PART_RE, SEGMENT_RE, Block, RenditionReport

if TYPE_CHECKING:
    from origin.files import FileOutputs

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range",
    "Access-Control-Expose-Headers": "Age, Content-Length, Content-Range, Date, ETag",
}
IMMUTABLE = "public, max-age=31536000, immutable"  # URIs are never reused (MSNs never repeat)
MAX_QUERY_INT = 10**12  # _HLS_msn/_HLS_part beyond this are nonsense, not a DoS vector


def _error(status: int, code: str, message: str, cache: str = "no-cache") -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status,
                             headers={**CORS, "Cache-Control": cache})


def _not_live(room_id: str) -> web.Response:
    return _error(404, "not_live", f"room {room_id!r} is not live")


def _playlist_response(request: web.Request, text: str, modified_at: float, cache: str) -> web.StreamResponse:
    body = text.encode()
    headers = {**CORS, "Content-Type": PLAYLIST_TYPE, "Cache-Control": cache, "Vary": "Accept-Encoding",
               "Last-Modified": formatdate(modified_at, usegmt=True)}
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    # One strong ETag per representation (identity and gzip bytes differ).
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + ('-gz"' if gzipped else '"')
    headers["ETag"] = etag
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if gzipped:
        # Apple 10.1: playlists MUST be gzip-able. Playlists are a few kB, so
        # compressing inline costs microseconds; mtime=0 keeps bytes stable.
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


class _MediaFileResponse(web.FileResponse):
    """FileResponse that never lets a shared cache keep an error: if the file
    vanished between the playlist model vouching for it and the open (a
    restarted packager clearing its directory, an ended live's files being
    removed), aiohttp answers 404 with the headers we set, and `immutable`
    would pin that 404 in a CDN for a year."""

    def set_status(self, status: int, reason: str | None = None) -> None:
        super().set_status(status, reason)
        if status >= 400:
            self.headers["Cache-Control"] = "no-cache"


def _listed(outputs: dict[str, RenditionOutput]) -> list[tuple[str, RenditionOutput]]:
    """Renditions of the multivariant playlist, in order; rendition reports
    name exactly these (bis App. B.1: one report per other variant)."""
    first = outputs.get("source") or next(iter(outputs.values()))
    return [(name, out) for name, out in outputs.items()
            if out.playlist is not None and out.playlist.has_media()
            # A rendition dropped under load while the source goes on.
            and not (out.done and out is not first)]


def _int_param(query, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_QUERY_INT:
        raise web.HTTPBadRequest(text=f"{name} must be a non-negative integer")
    return int(raw)


class HlsOrigin:
    def __init__(self, service: PackagingService | FileOutputs, *, viewers: ViewerCounter | None = None) -> None:
        self.service = service
        s = service.settings
        self.td = s.playlist_target_duration_s
        self.block_timeout = s.blocking_timeout_ms / 1000
        # Who is watching: addresses that reload a room's media playlists.
        self.viewers = viewers if viewers is not None else ViewerCounter()

    def viewer_count(self, room_id: str) -> int:
        """Estimated concurrent viewers of a room (origin/viewers.py)."""
        return self.viewers.count(room_id)

    def _output(self, request: web.Request) -> RenditionOutput | None:
        return self.service.outputs(request.match_info["room_id"]).get(request.match_info["rendition"])

    async def _wait_for_media(self, out: RenditionOutput) -> bool:
        """A live that has not produced its first part yet: wait briefly."""
        def ready() -> bool:
            return out.playlist is not None and (out.playlist.has_media() or out.playlist.ended)
        return ready() or await out.wait_until(ready, self.block_timeout)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS, "Access-Control-Max-Age": "86400"})

    async def multivariant(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        outputs = self.service.outputs(room_id)
        if not outputs:
            return _not_live(room_id)
        first = outputs.get("source") or next(iter(outputs.values()))
        if first.done:
            # The broadcast is over: the room is offline until the next one
            # (media playlists keep answering with their ENDLIST).
            return _not_live(room_id)
        if not await self._wait_for_media(first):
            return _error(503, "starting", "the live has not produced media yet", cache="no-cache")
        variants = []
        for name, out in _listed(outputs):
            bandwidth = out.peak_bandwidth or out.average_bandwidth or 1
            variants.append(Variant(f"{name}/index.m3u8", bandwidth, out.average_bandwidth or bandwidth,
                                    out.codecs, out.width, out.height, out.frame_rate_milli))
        text = render_multivariant(variants)
        modified = max(o.modified_at for o in outputs.values())
        # Short: the ladder can change when a transcoder starts.
        return _playlist_response(request, text, modified, "public, max-age=2")

    async def media_playlist(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        out = self._output(request)
        if out is None:
            return _not_live(room_id)
        self.viewers.seen(room_id, request.remote)
        q = request.query
        try:
            msn = _int_param(q, "_HLS_msn")
            part = _int_param(q, "_HLS_part")
        except web.HTTPBadRequest as e:
            return _error(400, "bad_request", e.text)
        if part is not None and msn is None:
            return _error(400, "bad_request", "_HLS_part requires _HLS_msn")  # bis 6.2.5.2 MUST
        skip = q.get("_HLS_skip") in ("YES", "v2")
        if not await self._wait_for_media(out):
            return _error(503, "starting", "the live has not produced media yet")
        pl = out.playlist
        td = self.td
        if msn is not None:
            state = pl.block(msn, part)
            if state is Block.TOO_FAR:
                return _error(400, "bad_request", "_HLS_msn/_HLS_part too far ahead of the playlist",
                              cache=f"public, max-age={td}")
            if state is Block.WAIT:
                ok = await out.wait_until(lambda: out.playlist.block(msn, part) is not Block.WAIT,
                                          self.block_timeout)
                pl = out.playlist
                if not ok and pl.block(msn, part) is not Block.READY:
                    return _error(503, "timeout", "the requested part did not appear in time",
                                  cache=f"public, max-age={td}")
            # App. B.1: a blocking response is final for its _HLS_ key.
            cache = f"public, max-age={6 * td}"
        else:
            cache = "public, max-age=1"  # keep tune-in fresh (App. C reads Age)
        reports = []
        for name, other in _listed(self.service.outputs(room_id)):
            last = other.playlist.last_part() if other is not out else None
            if last is not None:
                # LAST-MSN/LAST-PART: the newest part of the other rendition (bis 4.4.5.4).
                reports.append(RenditionReport(f"../{name}/index.m3u8", last[0], last[1]))
        if pl.ended:
            cache = f"public, max-age={td}"
        return _playlist_response(request, pl.render(skip=skip, reports=reports), out.modified_at, cache)

    async def media_file(self, request: web.Request) -> web.StreamResponse:
        room_id, rendition = request.match_info["room_id"], request.match_info["rendition"]
        name = request.match_info["file"]
        if INIT_RE.match(name):
            ctype = "video/mp4"
        elif SEGMENT_RE.match(name) or PART_RE.match(name):
            ctype = "video/iso.segment"
        else:
            return _error(404, "not_found", "no such file")
        out = self._output(request)
        if out is None:
            return _not_live(room_id)
        path = self.service.store.path(room_id, rendition, name)
        pl = out.playlist
        m = PART_RE.match(name)
        if m and pl is not None:
            msn, index = int(m.group(1)), int(m.group(2))
            if pl.part_published(msn, index) is None and pl.block(msn, index) is Block.WAIT:
                # A preload-hinted part (or one just ahead of it): hold the
                # request until the whole part exists, then send it at full
                # speed (bis 6.2.6). If a keyframe closes the segment first,
                # the hint is void and the wait ends at once with a 404.
                await out.wait_until(lambda: out.playlist.part_published(msn, index) is not None,
                                     self.block_timeout)
                pl = out.playlist
        # The model lists every file the packager wrote and still keeps (it is
        # published only after its bytes are on disk): no stat for those. Files
        # that slid out of the window live on for a grace period (bis 6.2.2).
        if (pl is None or not pl.has_file(name)) and not await asyncio.to_thread(path.is_file):
            # App. B.1: an unsuccessful media request is cached 1 x TD.
            return _error(404, "not_found", "no such file", cache=f"public, max-age={self.td}")
        return _MediaFileResponse(path, headers={**CORS, "Content-Type": ctype, "Cache-Control": IMMUTABLE})

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        store = self.service.store
        path = store.room_dir(room_id) / THUMBNAIL_FILE if store.valid_id(room_id) else None
        if path is None or not await asyncio.to_thread(path.is_file):
            return _error(404, "no_thumbnail", "this room has no thumbnail yet", cache="public, max-age=5")
        # Renewed every few seconds while live: a short cache is enough.
        headers = {**CORS, "Content-Type": "image/jpeg", "Cache-Control": "public, max-age=5"}
        return web.FileResponse(path, headers=headers)


HLS_ORIGIN = web.AppKey("hls_origin", HlsOrigin)


def add_hls_routes(app: web.Application, service: PackagingService | FileOutputs) -> HlsOrigin:
    """Mount the origin (also kept as app[HLS_ORIGIN]); it answers
    viewer_count(room_id) for the room listing."""
    origin = HlsOrigin(service)
    app[HLS_ORIGIN] = origin
    app.router.add_get("/live/{room_id}/thumbnail.jpg", origin.thumbnail)
    app.router.add_get("/live/{room_id}/master.m3u8", origin.multivariant)
    app.router.add_get("/live/{room_id}/{rendition}/index.m3u8", origin.media_playlist)
    app.router.add_get("/live/{room_id}/{rendition}/{file}", origin.media_file)
    app.router.add_route("OPTIONS", "/live/{room_id}/{tail:.+}", origin.options)
    return origin
