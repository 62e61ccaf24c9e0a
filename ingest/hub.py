"""StreamHub: fan-out of one live's media items to any number of consumers.

The publisher side (`publish`) is synchronous and O(consumers): it never
awaits and never blocks on a reader (MediaMTX `internal/stream` idea). Each
Consumer has a queue bounded in items and bytes; when a frame would not fit,
the consumer's queued frames are discarded and it skips forward to the next
video keyframe (the next frame for audio-only streams). Control items
(StreamStart, CodecConfig, StreamEnd) are never discarded; configs made
obsolete by a skip are collapsed, and a queued session left with no frames
(start, configs, end) is dropped whole, so they cannot pile up either.

A GOP cache (the frames since the last video keyframe, audio interleaved as
published) lets a consumer that subscribes late start on a keyframe.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from .errors import LocalProtocolError
from .frames import AUDIO, VIDEO, CodecConfig, Frame, HubItem, StreamEnd, StreamStart

log = logging.getLogger(__name__)

# Consumer defaults: 2048 items is ~30 s of 30 fps video + 48 kHz AAC; 32 MiB
# holds that at ~8 Mbit/s, well above what an OBS default (6 Mbit/s) sends.
DEFAULT_CONSUMER_MAX_ITEMS = 2048
DEFAULT_CONSUMER_MAX_BYTES = 32 * 2**20
# GOP cache: OBS's automatic keyframe interval is 250 frames (8.3 s at 30 fps);
# 600 frames and 16 MiB cover that plus audio at common bitrates. A GOP larger
# than this is not cached (late consumers then wait for the next keyframe).
DEFAULT_GOP_CACHE_MAX_BYTES = 16 * 2**20
DEFAULT_GOP_CACHE_MAX_FRAMES = 600
# Skips are logged at most this often per consumer (a stalled reader would
# otherwise log once per GOP).
OVERFLOW_LOG_INTERVAL_S = 5.0


def _size(item: HubItem) -> int:
    if isinstance(item, Frame):
        return len(item.data)
    if isinstance(item, CodecConfig):
        return len(item.record)
    return 0


class Consumer:
    """One reader of a StreamHub. Use from the event loop thread only, with at
    most one pending `get()` at a time.

    `get()` waits for the next item and returns None once the consumer is
    closed (by the hub: after the queued items are drained; by itself: at
    once). `get_nowait()` returns the next item, None when closed and
    drained, and raises asyncio.QueueEmpty when nothing is queued yet.
    """

    def __init__(self, hub: StreamHub, name: str, *, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise LocalProtocolError("consumer limits must be positive")
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0  # frames discarded or skipped
        self.overflows = 0  # times the queue was full and the consumer skipped
        self.closed = False
        self._hub: StreamHub | None = hub
        self._queue: deque[HubItem] = deque()
        self._bytes = 0
        self._skipping = False
        self._waiter: asyncio.Future | None = None
        self._last_log: float | None = None
        self._unlogged_drops = 0

    @property
    def queued_items(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def skipping(self) -> bool:
        return self._skipping

    async def get(self) -> HubItem | None:
        while not self._queue:
            if self.closed:
                return None
            if self._waiter is not None:
                raise LocalProtocolError(f"consumer {self.name!r}: concurrent get()")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._pop()

    def get_nowait(self) -> HubItem | None:
        if self._queue:
            return self._pop()
        if self.closed:
            return None
        raise asyncio.QueueEmpty

    def close(self) -> None:
        """Stop receiving; queued items are discarded and get() returns None."""
        self._queue.clear()
        self._bytes = 0
        self._finish()
        if self._hub is not None:
            self._hub._remove(self)
            self._hub = None

    # -- hub side -------------------------------------------------------------

    def _pop(self) -> HubItem:
        item = self._queue.popleft()
        self._bytes -= _size(item)
        return item

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _finish(self) -> None:
        self.closed = True
        self._wake()

    def _push(self, item: HubItem, has_video: bool) -> None:
        if self.closed:
            return
        if isinstance(item, Frame):
            if self._skipping:
                if item.kind == VIDEO and item.keyframe or not has_video:
                    self._skipping = False
                else:
                    self.dropped += 1
                    return
            size = len(item.data)
            if len(self._queue) + 1 > self.max_items or self._bytes + size > self.max_bytes:
                self._overflow()
                # Resume at once if this frame is itself a valid start point.
                if not (item.kind == VIDEO and item.keyframe or not has_video) or size > self.max_bytes:
                    self.dropped += 1
                    return
                self._skipping = False
        elif isinstance(item, StreamStart):
            # A new session restarts timestamps; a skip from the old one ends.
            self._skipping = False
        self._queue.append(item)
        self._bytes += _size(item)
        self._wake()

    def _overflow(self) -> None:
        # Drop every queued frame. With the frames gone, a config followed by
        # another config of the same kind (same session) describes nothing:
        # keep only the latest, so a publisher that keeps changing its
        # sequence header cannot grow a stalled consumer's queue either.
        kept: list[HubItem | None] = []
        latest: dict[str, int] = {}
        dropped = 0
        start_at: int | None = None  # index in kept of a StreamStart followed by configs only
        for it in self._queue:
            if isinstance(it, Frame):
                dropped += 1
                continue
            if isinstance(it, CodecConfig):
                if it.kind in latest:
                    kept[latest[it.kind]] = None
                latest[it.kind] = len(kept)
            elif (isinstance(it, StreamEnd) and start_at is not None
                    and kept[start_at].session_id == it.session_id):
                # Audit: a whole session with its frames gone (start, configs,
                # end) describes nothing; dropping it keeps a publisher that
                # reconnects again and again from growing a stalled queue.
                del kept[start_at:]
                latest.clear()
                start_at = None
                continue
            else:
                latest.clear()
            start_at = len(kept) if isinstance(it, StreamStart) else start_at if isinstance(it, CodecConfig) else None
            kept.append(it)
        self._queue = deque(it for it in kept if it is not None)
        self._bytes = sum(_size(it) for it in self._queue)
        self.dropped += dropped
        self.overflows += 1
        self._skipping = True
        self._unlogged_drops += dropped
        now = time.monotonic()
        if self._last_log is None or now - self._last_log >= OVERFLOW_LOG_INTERVAL_S:
            log.warning(
                "consumer %r of live %s fell behind: dropped %d frames (overflows %d), skipping to the next keyframe",
                self.name, self._hub.live_id if self._hub else "?", self._unlogged_drops, self.overflows,
            )
            self._last_log = now
            self._unlogged_drops = 0


class StreamHub:
    def __init__(
        self,
        live_id: int,
        *,
        gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES,
        gop_cache_max_frames: int = DEFAULT_GOP_CACHE_MAX_FRAMES,
    ) -> None:
        self.live_id = live_id
        self.gop_cache_max_bytes = gop_cache_max_bytes
        self.gop_cache_max_frames = gop_cache_max_frames
        self.configs: dict[str, CodecConfig] = {}
        self.consumers: list[Consumer] = []
        self.closed = False
        self.start: StreamStart | None = None  # the current session, if a publisher is on
        self._gop: list[Frame] = []
        self._gop_bytes = 0
        self._gop_open = False  # caching since the last video keyframe
        self.published = 0

    @property
    def gop_cache(self) -> list[Frame]:
        return list(self._gop)

    def publish(self, item: HubItem) -> None:
        if self.closed:
            return  # a session that lost a race with close(); nothing to deliver to
        if isinstance(item, StreamStart):
            self.start = item
            self._reset_media()
        elif isinstance(item, StreamEnd):
            if self.start is None or self.start.session_id != item.session_id:
                # The end of a session already replaced (takeover) or ended.
                return
            self.start = None
            self._reset_media()
        elif isinstance(item, CodecConfig):
            self.configs[item.kind] = item
            # Cached frames belong to the previous config; restart at the next keyframe.
            self._clear_gop()
        elif isinstance(item, Frame):
            self._cache(item)
        else:
            raise LocalProtocolError(f"cannot publish {type(item).__name__}")
        self.published += 1
        has_video = VIDEO in self.configs
        for consumer in self.consumers:
            consumer._push(item, has_video)

    def subscribe(
        self,
        name: str,
        *,
        max_items: int = DEFAULT_CONSUMER_MAX_ITEMS,
        max_bytes: int = DEFAULT_CONSUMER_MAX_BYTES,
    ) -> Consumer:
        consumer = Consumer(self, name, max_items=max_items, max_bytes=max_bytes)
        if self.closed:
            consumer._finish()
            consumer._hub = None
            return consumer
        has_video = VIDEO in self.configs
        if self.start is not None:
            consumer._push(self.start, has_video)
        for kind in (VIDEO, AUDIO):
            if kind in self.configs:
                consumer._push(self.configs[kind], has_video)
        for frame in self._gop:
            consumer._push(frame, has_video)
        self.consumers.append(consumer)
        return consumer

    def close(self) -> None:
        """No more items: every consumer gets what it has queued, then None."""
        if self.closed:
            return
        self.closed = True
        consumers, self.consumers = self.consumers, []
        for consumer in consumers:
            consumer._hub = None
            consumer._finish()
        self._reset_media()

    def _remove(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            pass

    def _reset_media(self) -> None:
        self.configs = {}
        self._clear_gop()

    def _clear_gop(self) -> None:
        self._gop = []
        self._gop_bytes = 0
        self._gop_open = False

    def _cache(self, frame: Frame) -> None:
        if VIDEO not in self.configs:
            return  # audio-only: every frame is a start point, nothing to cache
        if frame.kind == VIDEO and frame.keyframe:
            self._gop = []
            self._gop_bytes = 0
            self._gop_open = True
        elif not self._gop_open:
            return
        self._gop.append(frame)
        self._gop_bytes += len(frame.data)
        if len(self._gop) > self.gop_cache_max_frames or self._gop_bytes > self.gop_cache_max_bytes:
            # Too long a GOP to keep: stop caching until the next keyframe.
            self._clear_gop()
