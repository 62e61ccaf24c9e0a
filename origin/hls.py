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

import gzip
import hashlib
from email.utils import formatdate
from typing import TYPE_CHECKING

from aiohttp import web

from transcoder.packager import RenditionOutput
from transcoder.thumbnails import THUMBNAIL_FILE
from transcoder.packaging import PackagingService
from transcoder.playlist import (INIT_RE, PART_RE, SEGMENT_RE, Block, RenditionReport, Variant,
                                 render_multivariant)

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


def _int_param(query, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_QUERY_INT:
        raise web.HTTPBadRequest(text=f"{name} must be a non-negative integer")
    return int(raw)


class HlsOrigin:
    def __init__(self, service: PackagingService | FileOutputs) -> None:
        self.service = service
        s = service.settings
        self.td = s.playlist_target_duration_s
        self.block_timeout = s.blocking_timeout_ms / 1000

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
        for name, out in outputs.items():
            if out.playlist is None or not out.playlist.has_media():
                continue
            if out.done and out is not first:
                continue  # a rendition dropped under load while the source goes on
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
        for name, other in self.service.outputs(room_id).items():
            if other is out or other.playlist is None:
                continue
            last = other.playlist.last_part()
            if last is not None:
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
        store = self.service.store
        path = store.path(room_id, rendition, name)
        cache = IMMUTABLE
        m = PART_RE.match(name)
        pl = out.playlist
        if m and pl is not None:
            msn, index = int(m.group(1)), int(m.group(2))
            if pl.part_published(msn, index) is None and msn <= pl.next_msn + 1:
                # A preload-hinted part: hold the request until the whole
                # part exists, then send it at full speed (bis 6.2.6).
                await out.wait_until(lambda: out.playlist.part_published(msn, index) is not None,
                                     self.block_timeout)
        if not path.is_file():
            return _error(404, "not_found", "no such file", cache=f"public, max-age={self.td}")
        headers = {**CORS, "Content-Type": ctype, "Cache-Control": cache}
        return web.FileResponse(path, headers=headers)


    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        store = self.service.store
        path = store.room_dir(room_id) / THUMBNAIL_FILE if store.valid_id(room_id) else None
        if path is None or not path.is_file():
            return _error(404, "no_thumbnail", "this room has no thumbnail yet", cache="public, max-age=5")
        # Renewed every few seconds while live: a short cache is enough.
        headers = {**CORS, "Content-Type": "image/jpeg", "Cache-Control": "public, max-age=5"}
        return web.FileResponse(path, headers=headers)


def add_hls_routes(app: web.Application, service: PackagingService | FileOutputs) -> None:
    origin = HlsOrigin(service)
    app.router.add_get("/live/{room_id}/thumbnail.jpg", origin.thumbnail)
    app.router.add_get("/live/{room_id}/master.m3u8", origin.multivariant)
    app.router.add_get("/live/{room_id}/{rendition}/index.m3u8", origin.media_playlist)
    app.router.add_get("/live/{room_id}/{rendition}/{file}", origin.media_file)
    app.router.add_route("OPTIONS", "/live/{room_id}/{tail:.+}", origin.options)
