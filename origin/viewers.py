"""A cheap estimate of the concurrent viewers of each room, for the room
listing's `viewer_count`.

A viewer is a distinct client address that fetched one of the room's media
playlists in the last `window_s` seconds. Every HLS player reloads its media
playlist at least once per target duration (bis 6.3.4; an LL-HLS player
once per part), so a window of a few target durations sees every player
that is still watching and forgets one that left soon after.

Costs: O(1) per playlist request (a dict update and a move to the end of an
insertion-ordered dict), pruned lazily from the oldest end on each call, so
no timer and no task. Memory is bounded by `max_per_room` addresses per
room; rooms are only recorded by the origin once they are live, so their
number is bounded by the lives on air, and an idle room is dropped when its
last address expires.

Behind a shared cache (configs/ nginx edge, a CDN) the origin sees the
edge's address and only the requests the cache did not collapse, so the
figure then counts edges, not people: count at the edge in that set-up.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

# A playlist reload comes at least every TARGETDURATION (4 s with the default
# 2 s segments and their 4 s cap); 10 s tolerates one slow or lost reload.
DEFAULT_WINDOW_S = 10.0
# Above this a room is "very popular" and the count saturates: bounds the
# memory a flood of spoofed or NATed addresses can take (~100 bytes each).
DEFAULT_MAX_PER_ROOM = 10_000


class ViewerCounter:
    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_per_room < 1:
            raise ValueError("need window_s > 0 and max_per_room >= 1")
        self.window_s = window_s
        self.max_per_room = max_per_room
        self._clock = clock
        # room -> {address: last seen}, oldest first (move_to_end on each hit).
        self._rooms: dict[str, OrderedDict[str, float]] = {}

    def seen(self, room_id: str, address: str | None) -> None:
        """A client at `address` fetched a media playlist of the room."""
        if not address:
            return  # e.g. a Unix socket peer: nothing to tell viewers apart by
        now = self._clock()
        seen = self._rooms.setdefault(room_id, OrderedDict())
        seen[address] = now
        seen.move_to_end(address)
        self._prune(seen, now)
        while len(seen) > self.max_per_room:
            seen.popitem(last=False)  # the least recently seen makes room

    def count(self, room_id: str) -> int:
        """Distinct addresses of the room seen within the window."""
        seen = self._rooms.get(room_id)
        if seen is None:
            return 0
        self._prune(seen, self._clock())
        if not seen:
            del self._rooms[room_id]
            return 0
        return len(seen)

    def counts(self) -> dict[str, int]:
        """count() of every room that has viewers (prunes all rooms)."""
        return {room: n for room in list(self._rooms) if (n := self.count(room))}

    def _prune(self, seen: OrderedDict[str, float], now: float) -> None:
        horizon = now - self.window_s
        while seen:
            address, last = next(iter(seen.items()))
            if last > horizon:
                break
            del seen[address]
