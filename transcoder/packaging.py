"""PackagingService: runs one Packager per (room, rendition) and is the
registry the origin reads (`outputs(room_id)`), each output carrying the
asyncio.Condition the origin's blocking reloads wait on (ll-hls.md §4,
"one Condition per rendition").
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.packager import Consumer, Packager, RenditionOutput, RoomTimeline

log = logging.getLogger(__name__)

SOURCE = "source"


class PackagingService:
    def __init__(self, store: SegmentStore, settings: HlsSettings = HlsSettings(), *,
                 # Time given to packagers to write their ENDLIST on stop().
                 stop_timeout_s: float = 5.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.store = store
        self.settings = settings
        self._outputs: dict[str, dict[str, RenditionOutput]] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}
        self._consumers: dict[tuple[str, str], Consumer] = {}
        self._timelines: dict[str, RoomTimeline] = {}

    def start(self, room_id: str, hub: Any) -> None:
        """Subscribe to the live's StreamHub and package its source rendition."""
        key = (room_id, SOURCE)
        if key in self._tasks and not self._tasks[key].done():
            log.info("%s: packager already running", room_id)
            return
        consumer = hub.subscribe(f"packager:{room_id}:{SOURCE}",
                                 max_items=self.settings.consumer_max_items,
                                 max_bytes=self.settings.consumer_max_bytes)
        self.start_rendition(room_id, SOURCE, consumer)

    def start_rendition(self, room_id: str, rendition: str, consumer: Consumer) -> RenditionOutput:
        """Package any consumer of hub items (the transcoders' renditions too)."""
        key = (room_id, rendition)
        old = self._tasks.get(key)
        if old is not None and not old.done():
            raise RuntimeError(f"{room_id}/{rendition} is already being packaged")
        timeline = self._timelines.setdefault(room_id, RoomTimeline(leader=SOURCE))
        packager = Packager(room_id, rendition, self.store, self.settings, timeline=timeline)
        self._outputs.setdefault(room_id, {})[rendition] = packager.output
        self._consumers[key] = consumer
        task = asyncio.create_task(self._run(packager, consumer), name=f"packager:{room_id}:{rendition}")
        self._tasks[key] = task
        return packager.output

    async def _run(self, packager: Packager, consumer: Consumer) -> None:
        try:
            await packager.run(consumer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s/%s: packager failed", packager.room_id, packager.rendition)

    def outputs(self, room_id: str) -> dict[str, RenditionOutput]:
        """Renditions of a room that are (or just were) live; empty if none."""
        return dict(self._outputs.get(room_id, {}))

    def forget(self, room_id: str) -> None:
        """Stop serving a finished room (its files stay until the store deletes them)."""
        if not any(not t.done() for (r, _), t in self._tasks.items() if r == room_id):
            self._outputs.pop(room_id, None)

    async def stop(self) -> None:
        for consumer in self._consumers.values():
            close = getattr(consumer, "close", None)
            if close is not None:
                close()
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            # A closed consumer returns None: each packager writes ENDLIST
            # and exits; cancel only the ones stuck longer than this.
            _done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        self._consumers.clear()
