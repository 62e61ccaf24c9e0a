"""PackagingService: runs one Packager per (room, rendition) and is the
registry the origin reads (`outputs(room_id)`), each output carrying the
asyncio.Condition the origin's blocking reloads wait on (ll-hls.md §4,
"one Condition per rendition"). The source rendition reads the hub through
a `SourceInput`, which swaps a non-AAC source's audio for the transcoder's AAC.

When a rendition's live has ended for good (its packager wrote ENDLIST), the
service keeps serving it for `HlsSettings.ended_keep_s`, then forgets it
(the origin answers 404) and deletes its files (Packager.remove_media). A
new publish of the room cancels a pending removal, or waits for one that
has begun deleting, before its packager touches the directory.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.packager import Consumer, Packager
from transcoder.rendition import RenditionOutput, RoomTimeline
from transcoder.source_audio import SourceInput

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
        # Pending removals of ended renditions; a key in _removing has begun
        # deleting and is waited for, not cancelled.
        self._removals: dict[tuple[str, str], asyncio.Task] = {}
        self._removing: set[tuple[str, str]] = set()
        self._stopping = False

    def start(self, room_id: str, hub: Any) -> SourceInput | None:
        """Subscribe to the live's StreamHub and package its source rendition.

        Returns its input: a non-AAC source's audio is replaced there by the
        AAC a transcoder puts into `.audio` (transcoder/source_audio.py).
        None when the room's source packager is already running."""
        key = (room_id, SOURCE)
        if self._busy(key):
            log.info("%s: packager already running", room_id)
            return None
        consumer = hub.subscribe(f"packager:{room_id}:{SOURCE}",
                                 max_items=self.settings.consumer_max_items,
                                 max_bytes=self.settings.consumer_max_bytes)
        source = SourceInput(consumer)
        self.start_rendition(room_id, SOURCE, source)
        return source

    def start_rendition(self, room_id: str, rendition: str, consumer: Consumer) -> RenditionOutput:
        """Package any consumer of hub items (the transcoders' renditions too)."""
        key = (room_id, rendition)
        if self._busy(key):
            raise RuntimeError(f"{room_id}/{rendition} is already being packaged")
        # The previous live's packager may still be writing its ENDLIST (its
        # input just ended): the new one starts when it is done.
        previous = self._tasks.get(key)
        timeline = self._timelines.setdefault(room_id, RoomTimeline(leader=SOURCE))
        packager = Packager(room_id, rendition, self.store, self.settings, timeline=timeline)
        self._outputs.setdefault(room_id, {})[rendition] = packager.output
        self._consumers[key] = consumer
        task = asyncio.create_task(self._run(packager, consumer, previous), name=f"packager:{room_id}:{rendition}")
        self._tasks[key] = task
        return packager.output

    def _busy(self, key: tuple[str, str]) -> bool:
        """A packager of `key` runs and its input has not ended."""
        task = self._tasks.get(key)
        return task is not None and not task.done() and not getattr(self._consumers.get(key), "closed", False)

    async def _run(self, packager: Packager, consumer: Consumer, previous: asyncio.Task | None) -> None:
        key = (packager.room_id, packager.rendition)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        removal = self._removals.pop(key, None)
        if removal is not None:
            if key not in self._removing:
                removal.cancel()  # still waiting: the new live reuses the directory
            await asyncio.wait([removal])  # or let it finish deleting first
        try:
            await packager.run(consumer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s/%s: packager failed", packager.room_id, packager.rendition)
        if not self._stopping:
            # The playlist has ended either way (run() ends it even on failure).
            self._removals[key] = asyncio.create_task(
                self._remove_later(packager, asyncio.current_task()),
                name=f"packager-remove:{packager.room_id}:{packager.rendition}")

    async def _remove_later(self, packager: Packager, run_task: asyncio.Task | None) -> None:
        """Forget an ended rendition and delete its files after ended_keep_s."""
        room_id, rendition = key = (packager.room_id, packager.rendition)
        await asyncio.sleep(self.settings.ended_keep_s)
        self._removing.add(key)
        try:
            rooms = self._outputs.get(room_id, {})
            if rooms.get(rendition) is packager.output:
                del rooms[rendition]  # bis 6.2.1: a removed stream answers 404
                if not rooms:
                    self._outputs.pop(room_id, None)
                    self._timelines.pop(room_id, None)
            if self._tasks.get(key) is run_task:
                del self._tasks[key]
                self._consumers.pop(key, None)
            await packager.remove_media()
        except Exception:
            log.exception("%s/%s: removing the ended live's files failed", room_id, rendition)
        finally:
            self._removing.discard(key)
            if self._removals.get(key) is asyncio.current_task():
                del self._removals[key]

    def outputs(self, room_id: str) -> dict[str, RenditionOutput]:
        """Renditions of a room that are (or just were) live; empty if none."""
        return dict(self._outputs.get(room_id, {}))

    def forget(self, room_id: str) -> None:
        """Stop serving a finished room (its files stay until the store deletes them)."""
        if not any(not t.done() for (r, _), t in self._tasks.items() if r == room_id):
            self._outputs.pop(room_id, None)

    async def stop(self) -> None:
        # Ended lives keep their files on shutdown: a restarted packager of
        # the room clears them on its next publish.
        self._stopping = True
        for key, removal in self._removals.items():
            if key not in self._removing:
                removal.cancel()
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
        await asyncio.gather(*self._removals.values(), return_exceptions=True)
        self._removals.clear()
