"""StreamRegistry: which publisher owns which live, and the live's StreamHub.

One publisher per live. A new valid publish of the same live takes over
(OBS republishes the same key seconds after a network drop while the old
TCP session may still look alive: nginx-rtmp #1152, MediaMTX "closing
existing publisher"). The hub outlives a publisher by `end_grace_s`, so an
encoder that reconnects quickly keeps the same hub and its consumers (the
packager then sees StreamEnd/StreamStart, a discontinuity, instead of the
end of the playlist).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol

from .frames import StreamEnd
from .hub import StreamHub

log = logging.getLogger(__name__)

# How long a live's hub (and its playlist) stays open after its publisher
# left: covers OBS's first reconnect attempt (2 s delay) with room for the
# TCP connect, handshake and auth.
DEFAULT_END_GRACE_S = 10.0


class Publisher(Protocol):
    live_id: int

    def drop(self, reason: str) -> None: ...

    def stats(self) -> dict: ...


class StreamRegistry:
    def __init__(self, *, end_grace_s: float = DEFAULT_END_GRACE_S, hub_factory: Callable[[int], StreamHub] = StreamHub) -> None:
        self.end_grace_s = end_grace_s
        self._hub_factory = hub_factory
        self._hubs: dict[int, StreamHub] = {}
        self._publishers: dict[int, Any] = {}
        self._session_ids: dict[int, int] = {}  # last session id per live, never reset
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[StreamHub], None]] = []

    def add_listener(self, callback: Callable[[StreamHub], None]) -> None:
        """`callback(hub)` runs synchronously whenever a hub is created, before
        the publisher that caused it can publish anything."""
        self._listeners.append(callback)

    def attach(self, live_id: int, publisher: Publisher) -> tuple[StreamHub, int]:
        self._cancel_timer(live_id)
        old = self._publishers.get(live_id)
        # Register the new publisher first so that the old one's detach(),
        # even if drop() calls it synchronously, is a no-op.
        self._publishers[live_id] = publisher
        session_id = self._session_ids.get(live_id, 0) + 1
        self._session_ids[live_id] = session_id
        hub = self._hubs.get(live_id)
        if hub is not None and not hub.closed and old is not None and old is not publisher:
            # End the old session on the hub now, in order, whatever the old
            # session later publishes (the hub ignores a stale StreamEnd).
            if hub.start is not None:
                hub.publish(StreamEnd(live_id, hub.start.session_id, "takeover"))
        if old is not None and old is not publisher:
            log.info("live %s: new publisher takes over (session %d)", live_id, session_id)
            try:
                old.drop("takeover")
            except Exception:
                log.exception("live %s: dropping the previous publisher failed", live_id)
        if hub is None or hub.closed:
            hub = self._hub_factory(live_id)
            self._hubs[live_id] = hub
            for callback in list(self._listeners):
                try:
                    callback(hub)
                except Exception:
                    # A broken consumer (packager, thumbnailer) must not stop the ingest.
                    log.exception("live %s: hub listener %r failed", live_id, callback)
        return hub, session_id

    def detach(self, live_id: int, publisher: Publisher) -> None:
        if self._publishers.get(live_id) is not publisher:
            return  # replaced by a takeover, or already detached
        del self._publishers[live_id]
        hub = self._hubs.get(live_id)
        if hub is None:
            return
        if hub.closed:
            del self._hubs[live_id]
            return
        if self.end_grace_s <= 0:
            self._expire(live_id, hub)
            return
        loop = asyncio.get_running_loop()
        self._cancel_timer(live_id)
        self._timers[live_id] = loop.call_later(self.end_grace_s, self._expire, live_id, hub)

    def drop(self, live_id: int, reason: str) -> bool:
        publisher = self._publishers.get(live_id)
        if publisher is None:
            return False
        publisher.drop(reason)
        return True

    def hub(self, live_id: int) -> StreamHub | None:
        return self._hubs.get(live_id)

    def publisher(self, live_id: int) -> Publisher | None:
        return self._publishers.get(live_id)

    def streams(self) -> list[dict]:
        out = []
        for live_id, publisher in self._publishers.items():
            info = {"live_id": live_id, "session_id": self._session_ids[live_id]}
            info.update(publisher.stats())
            out.append(info)
        return out

    async def close(self) -> None:
        for live_id, publisher in list(self._publishers.items()):
            try:
                publisher.drop("shutdown")
            except Exception:
                log.exception("live %s: dropping the publisher at shutdown failed", live_id)
        self._publishers.clear()
        for live_id in list(self._timers):
            self._cancel_timer(live_id)
        hubs, self._hubs = self._hubs, {}
        for hub in hubs.values():
            hub.close()
        await asyncio.sleep(0)  # let woken consumers see the end

    def _cancel_timer(self, live_id: int) -> None:
        timer = self._timers.pop(live_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, live_id: int, hub: StreamHub) -> None:
        self._timers.pop(live_id, None)
        if live_id in self._publishers or self._hubs.get(live_id) is not hub:
            return
        del self._hubs[live_id]
        log.info("live %s: no publisher for %.1f s, closing its hub", live_id, self.end_grace_s)
        hub.close()
