"""What the ingest asks of whoever decides on publishes, and the guard
against stream-key guessing.

`PublishAuthority` is injected into the RtmpServer (livecast/authority.py
implements it over the `lives` table), so the ingest never imports storage:
`authorize()` grants or refuses (`PublishRefused` carries the onStatus code),
`update()` reports what the publish turned out to be (`PublishInfo`), and
`ended()` is called exactly once per granted publish.

`FailureLimiter` counts refused connects/publishes per remote address in a
sliding window (`failed_publishes_per_minute`, docs/limits.md).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class PublishInfo:
    """What a publish turned out to be, for the `broadcasts` row: the encoder
    (onMetaData `encoder`, else the connect flashVer), the codecs from the
    sequence headers, and onMetaData as plain JSON-friendly values."""

    remote: str
    encoder: str | None
    video_codec: str | None
    audio_codec: str | None
    metadata: dict = field(default_factory=dict)


class PublishRefused(Exception):
    """Raised by a PublishAuthority to refuse a publish with an onStatus."""

    def __init__(self, description: str, status: str = "NetStream.Publish.BadName") -> None:
        super().__init__(description)
        self.description = description
        self.status = status


class Grant(Protocol):
    live_id: int
    room_id: str


class PublishAuthority(Protocol):
    async def authorize(self, app: str, stream_key: str, remote: str) -> Grant: ...

    async def update(self, grant: Any, info: PublishInfo) -> None: ...

    async def ended(self, grant: Any, *, bytes_received: int, reason: str) -> None: ...


class FailureLimiter:
    """Failed publish attempts per address in a sliding window."""

    def __init__(self, limit: int, window: float, *, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        # Bounded: a scan from many addresses cannot grow this without end.
        self.max_addresses = max_addresses
        self._fails: dict[str, deque[float]] = {}

    def _prune(self, address: str, now: float) -> deque[float] | None:
        q = self._fails.get(address)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[address]
            return None
        return q

    def record(self, address: str) -> None:
        now = time.monotonic()
        q = self._prune(address, now)
        if q is None:
            if len(self._fails) >= self.max_addresses:
                self._fails.pop(next(iter(self._fails)))
            q = self._fails[address] = deque(maxlen=self.limit + 1)
        q.append(now)

    def blocked(self, address: str) -> bool:
        q = self._prune(address, time.monotonic())
        return q is not None and len(q) >= self.limit
