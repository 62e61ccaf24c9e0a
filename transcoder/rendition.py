"""What a packager shares with its readers: RenditionOutput (the live
playlist model, the multivariant facts and the asyncio.Condition that
blocking reloads wait on: ll-hls.md §4, "one Condition per rendition") and
RoomTimeline (where each publish session starts on the room's media
timeline, so all renditions agree: rfc8216bis 6.2.4).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from transcoder.playlist import MediaPlaylist


@dataclass
class RenditionOutput:
    """What the origin reads for one rendition; `changed` is notified after
    every playlist change (new part, segment, end)."""

    room_id: str
    rendition: str
    playlist: MediaPlaylist | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    version: int = 0
    codecs: str = ""
    width: int = 0
    height: int = 0
    frame_rate_milli: int = 0
    peak_bandwidth: int = 0
    average_bandwidth: int = 0
    done: bool = False  # the packager task is over (ENDLIST or failure)
    modified_at: float = field(default_factory=time.time)  # Last-Modified of the playlist

    async def notify(self) -> None:
        async with self.changed:
            self.version += 1
            self.modified_at = time.time()
            self.changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (without polling) until predicate() or the packager is done;
        False on timeout."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: predicate() or self.done), timeout)
            except TimeoutError:
                return False
        return predicate()


class RoomTimeline:
    """Where each publish session of a room starts on the media timeline, as
    set by the leader rendition (the source) and read by the others."""

    # Sessions remembered: the current one and a few before it are enough for
    # renditions that lag the source by a few seconds.
    MAX_SESSIONS = 4

    def __init__(self, leader: str) -> None:
        self.leader = leader
        self._anchors: dict[int | None, tuple[int, int, int]] = {}

    def anchor(self, session_id: int | None) -> tuple[int, int, int] | None:
        """(first source dts in ms, 90 kHz start position, wall-clock ms)."""
        return self._anchors.get(session_id)

    def set_anchor(self, session_id: int | None, anchor: tuple[int, int, int]) -> None:
        self._anchors[session_id] = anchor
        while len(self._anchors) > self.MAX_SESSIONS:
            del self._anchors[next(iter(self._anchors))]
