"""The asyncio RTMP ingest listener: accepts TCP connections within the
connection limits (total and per remote address) and runs one
`RtmpConnection` task per connection (ingest/connection.py).

Authorization is an injected `PublishAuthority` (ingest/authorization.py,
re-exported here); this package never touches the database. Every limit is a
field of `IngestLimits` (docs/limits.md).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .authorization import FailureLimiter, Grant, PublishAuthority, PublishInfo, PublishRefused
from .connection import RtmpConnection
from .limits import IngestLimits

__all__ = [
    "FailureLimiter", "Grant", "PublishAuthority", "PublishInfo", "PublishRefused",
    "RtmpConnection", "RtmpServer",
]

log = logging.getLogger(__name__)


class RtmpServer:
    """The RTMP listener and its connections."""

    def __init__(self, authority: PublishAuthority, registry: Any, *,
                 limits: IngestLimits = IngestLimits(), app_name: str = "live") -> None:
        self.authority = authority
        self.registry = registry
        self.limits = limits
        self.app_name = app_name
        self.failures = FailureLimiter(limits.failed_publishes_per_minute, limits.failed_publish_window)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[RtmpConnection, asyncio.Task] = {}
        self._per_address: dict[str, int] = {}
        self._refused_logged = 0.0

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, host, port, limit=self.limits.read_size
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp ingest listening on %s:%s", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.drop("server stopping")
        tasks = list(self._connections.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = str(peer[0])
        remote = f"{peer[0]}:{peer[1]}"
        lim = self.limits
        if (len(self._connections) >= lim.max_connections
                or self._per_address.get(address, 0) >= lim.max_connections_per_address):
            now = time.monotonic()
            if now - self._refused_logged > 10:  # rate-limited: a flood must not flood logs
                self._refused_logged = now
                log.warning("rtmp %s: connection refused: connection limit reached", remote)
            writer.transport.abort()
            return
        conn = RtmpConnection(self, reader, writer, address, remote)
        task = asyncio.current_task()
        assert task is not None
        self._connections[conn] = task
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            await conn.run()
        finally:
            del self._connections[conn]
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]
