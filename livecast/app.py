"""Wires the components into one process: database, RTMP ingest, stream
registry, LL-HLS packaging, the HTTP listener (origin, player page, API,
metrics, health)."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web

from ingest.limits import IngestLimits
from ingest.registry import StreamRegistry
from ingest.server import RtmpServer
from livecast.authority import DatabaseAuthority
from livecast.config import data_dir as config_data_dir
from livecast.http import add_service_routes
from storage.database import Database, sqlite_url
from storage.lives import reset_crashed_lives
from storage.models import LiveOption
from storage.tokens import purge_expired
from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.ladder import parse_ladder
from transcoder.packaging import PackagingService
from transcoder.thumbnails import THUMBNAIL_FILE, ThumbnailPool, Thumbnailer
from transcoder.transcode import TranscodeSettings, Transcoder
from transcoder.transcode import metric_families as transcoder_metric_families
from control_api import ApiContext, mount_api
from origin.hls import add_hls_routes
from origin.watch import add_watch_routes

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0
# Audit: aiohttp 3.14's default keep-alive timeout is 3630 s, and it is also
# the only deadline on a request's headers: a client that opens a connection
# and trickles (or never sends) a request held it for an hour. 75 s is
# nginx's keepalive_timeout; blocking playlist reloads wait inside a handler,
# so they are not affected.
HTTP_KEEPALIVE_TIMEOUT_S = 75.0


def ingest_limits(rtmp: SimpleNamespace) -> IngestLimits:
    return IngestLimits(
        handshake_timeout=rtmp.handshake_timeout_s,
        publish_timeout=rtmp.publish_timeout_s,
        first_media_timeout=rtmp.first_media_timeout_s,
        idle_timeout=rtmp.idle_timeout_s,
        max_message_size=rtmp.max_message_bytes,
        max_chunk_streams=rtmp.max_chunk_streams,
        max_connections=rtmp.max_connections,
        max_connections_per_address=rtmp.max_connections_per_address,
        failed_publishes_per_minute=rtmp.failed_publishes_per_minute,
    )


def hls_settings(hls: SimpleNamespace) -> HlsSettings:
    return HlsSettings(
        target_duration_ms=hls.target_duration_ms,
        part_target_ms=hls.part_target_ms,
        window_segments=hls.window_segments,
        max_segment_ms=hls.max_segment_ms or 2 * hls.target_duration_ms,
        ended_keep_s=hls.ended_keep_s,
    )


def log_task_failure(task: asyncio.Task) -> None:
    """Done callback: log (and so retrieve) the exception of a failed task."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


class Livecast:
    """The whole server in one process. `await start()`, then `await stop()`."""

    def __init__(self, config: SimpleNamespace) -> None:
        self.config = config
        self.data_dir: Path = config_data_dir(config)
        self.db = Database(config.database.url or sqlite_url(self.data_dir))
        self.registry = StreamRegistry(end_grace_s=config.hls.end_grace_s)
        self.authority = DatabaseAuthority(self.db, self.registry, app_name=config.rtmp.app)
        self.rtmp = RtmpServer(self.authority, self.registry, limits=ingest_limits(config.rtmp), app_name=config.rtmp.app)
        self.store = SegmentStore(self.data_dir / "hls")
        self.packaging = PackagingService(self.store, hls_settings(config.hls))
        self.registry.add_listener(self._on_hub)
        self.ladder = parse_ladder(config.transcode.ladder)
        self.transcode_settings = TranscodeSettings.from_config(config.transcode)
        self.thumbnail_pool = ThumbnailPool()
        self._transcoders: dict[str, Transcoder] = {}
        self._thumbnailers: dict[str, Thumbnailer] = {}
        # Rooms whose thumbnail.jpg was on disk at start-up (bounded by the
        # rooms ever live); later ones are known from their Thumbnailer. Why:
        # thumbnail_url() runs per room of a listing, and a stat per room on
        # the event loop is blocking file I/O per request.
        self._thumbnail_rooms: set[str] = set()
        self._background: set[asyncio.Task] = set()
        self.http_app = web.Application(client_max_size=config.http.max_body_bytes)
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._http_socket: socket.socket | None = None
        self._started = time.monotonic()

    # -- wiring -----------------------------------------------------------
    def _on_hub(self, hub) -> None:
        room_id = self.authority.room_of(hub.live_id)
        if room_id is None:
            log.error("no room known for live %d; not packaging it", hub.live_id)
            return
        source = self.packaging.start(room_id, hub)
        t = self.config.transcode
        thumbnailer = Thumbnailer(room_id, hub, self.store, self.thumbnail_pool,
                                  interval_s=t.thumbnail_interval_s, width=t.thumbnail_width)
        thumbnailer.start()
        previous = self._thumbnailers.get(room_id)
        if previous is not None and previous.written:
            self._thumbnail_rooms.add(room_id)  # its file stays on disk: keep linking it
        self._thumbnailers[room_id] = thumbnailer
        # Every live gets a transcoder when its audio is not AAC (Opus): the
        # ladder's, or an audio-only one, so every rendition carries AAC.
        self._spawn(self._start_transcoder(room_id, hub, source))

    async def _start_transcoder(self, room_id: str, hub, source) -> None:
        ladder = self.ladder if self.config.transcode.enabled else []
        if ladder:
            async with self.db.session() as session:
                option = await session.get(LiveOption, hub.live_id)
            if option is not None and option.passthrough_only:
                log.info("%s: passthrough only, no ABR ladder", room_id)
                ladder = []
        if hub.closed:
            return
        if ladder:
            # It transcodes a non-AAC audio itself (audio-only when no rendition fits).
            self._new_transcoder(room_id, hub, ladder, source)
        elif source is not None:
            # No ladder: a transcoder only if the source's audio turns out not to be AAC.
            source.on_foreign_audio(lambda: self._new_transcoder(room_id, hub, [], source))

    def _new_transcoder(self, room_id: str, hub, ladder: list, source) -> None:
        if hub.closed:
            return
        transcoder = Transcoder(
            room_id, hub, ladder, self.transcode_settings,
            lambda name, queue: self.packaging.start_rendition(room_id, name, queue),
            audio_out=source.audio if source is not None else None,
        )
        transcoder.start()
        previous = self._transcoders.get(room_id)
        if previous is not None:
            # The last broadcast's transcoder: its hub is closed, so it is
            # ending anyway; stopping it here means none is left untracked.
            self._spawn(previous.stop())
        self._transcoders[room_id] = transcoder

    def streams(self) -> list[dict]:
        listing = []
        for stream in self.registry.streams():
            room_id = self.authority.room_of(stream["live_id"])
            transcoder = self._transcoders.get(room_id)
            started = datetime.now(timezone.utc) - timedelta(seconds=stream.get("uptime_s") or 0)
            codecs = [c for c in (stream.get("video_codec"), stream.get("audio_codec")) if c]
            listing.append({
                **stream,
                "room_id": room_id,
                "started_at": started.isoformat(timespec="seconds"),
                "codecs": ",".join(codecs) or None,
                "renditions": self._rendition_names(room_id),
                "transcoder": transcoder.status() if transcoder else None,
            })
        return listing

    def _rendition_names(self, room_id: str | None) -> list[str]:
        """source first, then the ladder from the highest down."""
        names = set(self.packaging.outputs(room_id)) if room_id else set()
        order = ["source"] + [r.name for r in self.ladder]
        return [n for n in order if n in names] + sorted(names - set(order))

    def health(self) -> dict:
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self._started, 1),
            "rtmp_connections": self.rtmp.connection_count,
            "streams": len(self.registry.streams()),
        }

    def metric_families(self) -> list:
        streams = self.streams()
        per_stream = lambda key: [  # noqa: E731
            ({"room": s["room_id"] or "", "live": str(s["live_id"])}, s.get(key) or 0) for s in streams
        ]
        return [
            ("livecast_rtmp_connections", "gauge", "Open RTMP connections.", [({}, self.rtmp.connection_count)]),
            ("livecast_streams", "gauge", "Lives on air.", [({}, len(streams))]),
            ("livecast_stream_bitrate_kbps", "gauge", "Ingest bitrate of each live.", per_stream("bitrate_kbps")),
            ("livecast_stream_fps", "gauge", "Ingest video frame rate of each live.", per_stream("fps")),
            ("livecast_stream_uptime_seconds", "gauge", "Time since the publish started.", per_stream("uptime_s")),
            *transcoder_metric_families(streams),
        ]

    def thumbnail_url(self, room_id: str) -> str | None:
        # No stat here (audit: per-request file I/O on the loop): the set
        # scanned at start plus the thumbnails written since.
        thumbnailer = self._thumbnailers.get(room_id)
        if room_id in self._thumbnail_rooms or (thumbnailer is not None and thumbnailer.written):
            return f"{self.public_url}/live/{room_id}/thumbnail.jpg"
        return None

    def _scan_thumbnails(self) -> set[str]:
        """Blocking: rooms with a thumbnail on disk (run in a thread at start)."""
        root = self.store.root
        return {p.parent.name for p in root.glob(f"*/{THUMBNAIL_FILE}") if self.store.valid_id(p.parent.name)}

    @property
    def public_url(self) -> str:
        if self.config.server.public_url:
            return self.config.server.public_url.rstrip("/")
        host = self.config.http.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"http://{host}:{self.http_port}"

    @property
    def rtmp_url(self) -> str:
        host = self.config.rtmp.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"rtmp://{host}:{self.rtmp_port}/{self.config.rtmp.app}"

    @property
    def rtmp_port(self) -> int:
        return self.rtmp.port

    @property
    def http_port(self) -> int:
        return self._http_socket.getsockname()[1] if self._http_socket else 0

    def _build_http(self) -> None:
        app = self.http_app
        add_service_routes(app, self.health, self.metric_families)
        self.hls_origin = add_hls_routes(app, self.packaging)
        add_watch_routes(app, self.db)
        mount_api(
            app,
            ApiContext(
                db=self.db,
                config=self.config,
                data_dir=self.data_dir,
                public_url=self.public_url,
                rtmp_url=self.rtmp_url,
                drop_live=self.registry.drop,
                streams=self.streams,
                thumbnail_url=self.thumbnail_url,
                viewer_count=self.hls_origin.viewer_count,
            ),
        )

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.create_all()
        reset = await reset_crashed_lives(self.db)
        if reset:
            log.warning("%d live(s) left on air by a crash were reset to idle", reset)
        self._thumbnail_rooms = await asyncio.to_thread(self._scan_thumbnails)
        await self.rtmp.start(self.config.rtmp.host, self.config.rtmp.port)
        # The API's URLs need the listener's port (port 0 in tests): bind the
        # socket first, then build the routes, then serve on it.
        self._http_socket = socket.create_server((self.config.http.host, self.config.http.port))
        self._build_http()
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False,
                                   keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S)
        await self._runner.setup()
        self._site = web.SockSite(self._runner, self._http_socket)
        await self._site.start()
        self._spawn(self._housekeeping())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Audit: a failure in a background task (e.g. the database query of
        # _start_transcoder) must be logged, not lost with the task.
        task.add_done_callback(log_task_failure)

    async def _housekeeping(self, every_s: float = HOUSEKEEPING_INTERVAL_S) -> None:
        """Expired login and mail tokens are deleted once an hour."""
        while True:
            try:
                async with self.db.session() as session, session.begin():
                    removed = await purge_expired(session)
                if removed:
                    log.info("housekeeping: %d expired tokens deleted", removed)
            except Exception:
                log.exception("housekeeping failed; trying again later")
            await asyncio.sleep(every_s)

    async def stop(self) -> None:
        await self.rtmp.stop()
        await self.registry.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(t.stop() for t in self._transcoders.values()), return_exceptions=True)
        await asyncio.gather(*(t.stop() for t in self._thumbnailers.values()), return_exceptions=True)
        await self.packaging.stop()
        self.thumbnail_pool.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.db.dispose()
