"""The bounded hand-off from the transcode supervisor to one rendition's
packager (the packager reads it like a StreamHub consumer: `async get()`,
None at the end)."""
from __future__ import annotations

import asyncio
import collections

from ingest.frames import VIDEO, CodecConfig, Frame


class RenditionQueue:
    """The bounded hand-off from the supervisor to one rendition's packager.

    `put()` never waits: when full, queued frames are dropped and the video
    skips to the next keyframe (like a StreamHub consumer). Control items
    (configs, start, end) are kept, except that a codec config replaces the
    queued older ones of its kind when the queue is full: a publisher that
    repeats its sequence header on every frame cannot grow it past max_items.
    """

    def __init__(self, name: str, max_items: int = 800) -> None:
        self.name = name
        self.max_items = max_items
        self.dropped = 0
        self.frames = 0
        self.bytes = 0
        self._items: collections.deque = collections.deque()
        self._skipping = False
        self._ended = False
        self._waiter: asyncio.Future | None = None

    def put(self, item) -> None:
        if self._ended:
            return
        if isinstance(item, Frame):
            if self._skipping:
                if not (item.kind == VIDEO and item.keyframe):
                    self.dropped += 1
                    return
                self._skipping = False
            if len(self._items) >= self.max_items:
                before = len(self._items)
                self._items = collections.deque(i for i in self._items if not isinstance(i, Frame))
                self.dropped += before - len(self._items)
                if not (item.kind == VIDEO and item.keyframe):
                    self._skipping = True
                    self.dropped += 1
                    return
            self.frames += 1
            self.bytes += len(item.data)
        elif isinstance(item, CodecConfig) and len(self._items) >= self.max_items:
            # Only the newest config of a kind matters to the packager once
            # the frames between the configs are gone.
            self.dropped += sum(isinstance(i, Frame) for i in self._items)
            self._items = collections.deque(
                i for i in self._items
                if not isinstance(i, Frame) and not (isinstance(i, CodecConfig) and i.kind == item.kind))
            self._skipping = True  # the next frame that fits is a video keyframe
        self._items.append(item)
        self._wake()

    def end(self) -> None:
        """No more items: get() returns what is queued, then None."""
        self._ended = True
        self._wake()

    @property
    def ended(self) -> bool:
        return self._ended

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self):
        while not self._items:
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        # The packaging service closes its consumers on shutdown.
        self._items.clear()
        self.end()

