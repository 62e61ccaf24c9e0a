"""In-memory sliding-window rate limits, bounded in memory.

Each key (an address, an account) keeps at most `limit` timestamps. The table
is ordered by each key's latest hit, so keys whose window has passed are at its
front and are pruned there on every hit (amortised O(1)); past that, it keeps
at most `max_keys` keys and forgets the least recently hit first. A flood of
distinct addresses therefore costs bounded memory: it can only make us forget
old counters early, never grow without end.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque


class RateLimiter:
    def __init__(self, limit: int, window_s: float, *, max_keys: int = 50_000, clock=time.monotonic) -> None:
        self.limit = limit          # events allowed per window; 0 = unlimited
        self.window_s = window_s
        self.max_keys = max_keys    # ~200 bytes a key: 10 MB at the default
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may act again; 0 if it may now."""
        if self.limit <= 0:
            return 0.0
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        now = self._clock()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            return 0.0
        return hits[0] + self.window_s - now

    def hit(self, key: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        self.prune(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        hits.append(now)

    def prune(self, now: float | None = None) -> int:
        """Forget keys with no hit inside the window; returns how many."""
        if now is None:
            now = self._clock()
        pruned = 0
        # Front = least recently hit: stop at the first key still counting.
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.window_s:
                break
            del self._hits[key]
            pruned += 1
        return pruned

    def check_and_hit(self, key: str) -> float:
        """Count one event; returns 0 if allowed, else the seconds to wait
        (and the refused attempt is not counted)."""
        wait = self.retry_after(key)
        if wait > 0:
            return wait
        self.hit(key)
        return 0.0

    def __len__(self) -> int:
        return len(self._hits)
