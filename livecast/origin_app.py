"""`livecast origin`: an HLS origin process without ingest or packaging.

It serves /live/... from the data dir's hls/ folder, written by a `livecast
serve` that shares the disk (the "one per machine" split of ARCHITECTURE.md,
docs/scaling.md). New parts are learned from the packager's state files
through watchdog (origin/files.py), so LL-HLS blocking reloads answer as
soon as the part is on disk. /watch/<room_id> is served too when the
database is reachable (database.url, or the SQLite file in the data dir).
"""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web

from livecast.app import HTTP_KEEPALIVE_TIMEOUT_S, hls_settings
from livecast.config import data_dir as config_data_dir
from livecast.http import add_service_routes
from origin.files import FileOutputs
from origin.hls import add_hls_routes
from storage.database import Database, sqlite_url

log = logging.getLogger(__name__)


class OriginServer:
    """`await start()`, then `await stop()`; `http_port` is the bound port."""

    def __init__(self, config: SimpleNamespace) -> None:
        self.config = config
        self.data_dir: Path = config_data_dir(config)
        self.outputs = FileOutputs(self.data_dir / "hls", hls_settings(config.hls))
        self.http_app = web.Application(client_max_size=config.http.max_body_bytes)
        self.db: Database | None = None
        self._runner: web.AppRunner | None = None
        self._http_socket: socket.socket | None = None
        self._started = time.monotonic()

    @property
    def http_port(self) -> int:
        return self._http_socket.getsockname()[1] if self._http_socket else 0

    @property
    def public_url(self) -> str:
        host = self.config.http.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"http://{host}:{self.http_port}"

    def health(self) -> dict:
        return {
            "status": "ok",
            "role": "origin",
            "uptime_s": round(time.monotonic() - self._started, 1),
            "renditions": self.outputs.rendition_count(),
        }

    def metric_families(self) -> list:
        return [
            ("livecast_origin_renditions", "gauge", "Renditions found in the segment store.",
             [({}, self.outputs.rendition_count())]),
            ("livecast_origin_state_reloads_total", "counter", "State files read after a watchdog event.",
             [({}, self.outputs.reloads)]),
        ]

    def _build_http(self) -> None:
        app = self.http_app
        add_service_routes(app, self.health, self.metric_families)
        add_hls_routes(app, self.outputs)
        url = self.config.database.url
        if url or (self.data_dir / "livecast.db").is_file():
            # The player page reads the room title; the schema belongs to `serve`.
            from origin.watch import add_watch_routes

            self.db = Database(url or sqlite_url(self.data_dir))
            add_watch_routes(app, self.db)
        else:
            log.info("no database configured or found: /watch is not served by this origin")

    async def start(self) -> None:
        await self.outputs.start()
        try:
            self._http_socket = socket.create_server((self.config.http.host, self.config.http.port))
            self._build_http()
            self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False,
                                           keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S)
            await self._runner.setup()
            await web.SockSite(self._runner, self._http_socket).start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        # Outputs first: it releases held blocking reloads, so the runner's
        # cleanup does not wait out their timeouts.
        await self.outputs.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif self._http_socket is not None:
            self._http_socket.close()
        if self.db is not None:
            await self.db.dispose()
            self.db = None
