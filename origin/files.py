"""Renditions written by a packager in another process, for the HLS origin.

`FileOutputs(store_root)` offers what origin/hls.py uses from the in-process
PackagingService — `outputs(room_id)`, `store`, `settings` — backed by the
per-rendition state files (`<root>/<room>/<rendition>/state.json`, written
atomically by transcoder/packager.py after every part: MediaPlaylist
to_state() plus the multivariant facts).

It never polls. A watchdog Observer (inotify on Linux) reports the atomic
rename of a state file as a moved event; its thread only hands the
(room, rendition) to the event loop with call_soon_threadsafe. On the loop,
one reload task per rendition reads the small file in a worker thread,
rebuilds the playlist model and notifies the rendition's Condition, which
wakes the blocking playlist reloads and preload-hinted part requests held
by the origin (ll-hls.md §4, bis 6.2.5.2 / 6.2.6). Events that arrive while
a reload runs coalesce into one more reload.

This is the "one origin per machine" split of ARCHITECTURE.md: any number
of these read one segment store (docs/scaling.md).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from watchdog.events import (EventsLostEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent,
                             FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.packager import STATE_FILE
from transcoder.rendition import RenditionOutput
from transcoder.playlist import MediaPlaylist

log = logging.getLogger(__name__)

# A state file holds a window of segments and their parts: a few kB (6
# segments x 16 parts is ~5 kB). Anything far bigger is not ours; refusing
# it bounds the memory a corrupt or hostile file can take.
DEFAULT_MAX_STATE_BYTES = 1024 * 1024
# observer.join() on stop: the inotify reader wakes at once when stopped;
# this only bounds a wedged filesystem.
DEFAULT_STOP_TIMEOUT_S = 5.0

_OUTPUT_INTS = ("width", "height", "frame_rate_milli", "peak_bandwidth", "average_bandwidth")


class _StateFileEvents(FileSystemEventHandler):
    """Runs in the watchdog thread: forwards state-file events, nothing else.
    Never touches asyncio objects except through call_soon_threadsafe."""

    def __init__(self, root: Path, loop: asyncio.AbstractEventLoop, wake, rescan) -> None:
        self.root = root
        self.loop = loop
        self.wake = wake
        self.rescan = rescan

    def _key(self, path: str | bytes) -> tuple[str, str] | None:
        path = os.fsdecode(path)
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if len(parts) == 3 and parts[2] == STATE_FILE and all(SegmentStore.valid_id(p) for p in parts[:2]):
            return parts[0], parts[1]
        return None

    def _post(self, callback, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: we are being torn down

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLostEvent):
            # The kernel queue overflowed: we no longer know what changed.
            self._post(self.rescan)
            return
        paths = [event.src_path]
        if isinstance(event, FileMovedEvent):
            paths.append(event.dest_path)  # the atomic write's rename lands here
        for key in {k for k in map(self._key, paths) if k is not None}:
            self._post(self.wake, key)


class FileOutputs:
    def __init__(
        self,
        store_root: str | os.PathLike,
        settings: HlsSettings = HlsSettings(),
        *,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.store = SegmentStore(store_root)
        self.settings = settings
        self.max_state_bytes = max_state_bytes
        self.stop_timeout_s = stop_timeout_s
        self.reloads = 0  # state files read (for /metrics and the tests: no polling)
        self._outputs: dict[str, dict[str, RenditionOutput]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}
        self._rescans: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self._observer: Observer | None = None
        self._root: Path | None = None
        self._stopping = False

    # ------------------------------------------------------------ interface
    def outputs(self, room_id: str) -> dict[str, RenditionOutput]:
        """Renditions of a room found on disk (live or ended); empty if none."""
        return dict(self._outputs.get(room_id, {}))

    def rendition_count(self) -> int:
        return sum(len(r) for r in self._outputs.values())

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        root = self.store.root
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        # resolve(): inotify reports paths under the watched path as given.
        root = await asyncio.to_thread(root.resolve)
        observer = Observer()
        observer.schedule(
            _StateFileEvents(root, loop, self._wake, self._rescan), str(root), recursive=True,
            event_filter=[FileCreatedEvent, FileMovedEvent, FileDeletedEvent, EventsLostEvent],
        )
        # observer.start() adds the inotify watches (a directory walk): not on the loop.
        await asyncio.to_thread(observer.start)
        self._observer = observer
        self._root = root
        # Watch first, then scan: a file written in between is seen twice, never missed.
        await self._rescan_async()

    async def stop(self) -> None:
        self._stopping = True
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, self.stop_timeout_s)
            if observer.is_alive():
                log.error("watchdog observer did not stop within %.1f s", self.stop_timeout_s)
        tasks = list(self._tasks.values()) + list(self._rescans)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        # Release anything still waiting: this origin will not learn more.
        for rooms in self._outputs.values():
            for out in rooms.values():
                out.done = True
                await out.notify()

    # ------------------------------------------------------- loop-side work
    def _rescan(self) -> None:
        if not self._stopping:
            task = asyncio.get_running_loop().create_task(self._rescan_async())
            self._rescans.add(task)
            task.add_done_callback(self._rescans.discard)

    async def _rescan_async(self) -> None:
        root = self._root

        def find() -> set[tuple[str, str]]:
            return {(p.parent.parent.name, p.parent.name) for p in root.glob(f"*/*/{STATE_FILE}")}

        try:
            found = await asyncio.to_thread(find)
        except OSError:
            # Audit: this runs as a fire-and-forget task; its failure is logged here.
            log.exception("rescanning %s failed", root)
            return
        known = {(r, n) for r, rooms in self._outputs.items() for n in rooms}
        for key in found | known:  # known but gone: the reload drops it
            self._wake(key)

    def _wake(self, key: tuple[str, str]) -> None:
        if self._stopping or not all(SegmentStore.valid_id(k) for k in key):
            return
        self._dirty.add(key)
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.get_running_loop().create_task(self._reload_loop(key),
                                                                       name=f"origin-files:{key[0]}/{key[1]}")

    async def _reload_loop(self, key: tuple[str, str]) -> None:
        # Bursts of events (tmp created, renamed, ...) collapse into reloads
        # of the latest file; one task per rendition, so reloads never race.
        while key in self._dirty:
            self._dirty.discard(key)
            try:
                await self._reload(*key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s/%s: reloading %s failed", key[0], key[1], STATE_FILE)

    def _read_state(self, room_id: str, rendition: str) -> bytes | None:
        try:
            with open(self.store.path(room_id, rendition, STATE_FILE), "rb") as f:
                raw = f.read(self.max_state_bytes + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(raw) > self.max_state_bytes:
            raise ValueError(f"{STATE_FILE} is larger than {self.max_state_bytes} bytes")
        return raw

    async def _reload(self, room_id: str, rendition: str) -> None:
        self.reloads += 1
        try:
            raw = await asyncio.to_thread(self._read_state, room_id, rendition)
            state = json.loads(raw) if raw is not None else None
            # No "playlist": the packager removed the files of an ended live
            # (Packager.remove_media), keeping only its restart counters.
            playlist = (MediaPlaylist.from_state(state["playlist"])
                        if state is not None and state.get("playlist") is not None else None)
            facts = state.get("output", {}) if state is not None else {}
            if not isinstance(facts, dict):
                raise ValueError("output must be an object")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Atomic writes make this a foreign or corrupt file: keep what we had.
            log.warning("%s/%s: unusable %s: %s", room_id, rendition, STATE_FILE, exc)
            return
        rooms = self._outputs.setdefault(room_id, {})
        out = rooms.get(rendition)
        if playlist is None:
            # The rendition's files were removed: stop serving it.
            rooms.pop(rendition, None)
            if not rooms:
                self._outputs.pop(room_id, None)
            if out is not None:
                out.done = True
                await out.notify()
            return
        if out is None:
            out = rooms[rendition] = RenditionOutput(room_id, rendition)
        async with out.changed:
            out.playlist = playlist
            # An ended playlist is what `done` means in-process (ENDLIST written).
            out.done = playlist.ended
            out.codecs = facts.get("codecs", "") if isinstance(facts.get("codecs", ""), str) else ""
            for name in _OUTPUT_INTS:
                value = facts.get(name, 0)
                setattr(out, name, value if type(value) is int and value >= 0 else 0)
            modified = state.get("modified_at")
            out.modified_at = float(modified) if isinstance(modified, (int, float)) else time.time()
            out.version += 1
            out.changed.notify_all()
