"""The source rendition's input: the live's StreamHub items, with the
publisher's audio replaced by the transcoder's AAC when it is not AAC
(a non-AAC source is transcoded to AAC once, and every rendition,
`source` included, carries that AAC; docs/abr.md "Audio").

The packager of `source` reads a `SourceInput` like any hub consumer
(`async get()`, None at the end). For an AAC live it is a plain pass-through.
When a session's audio configuration is not AAC (Opus from Enhanced RTMP),
its audio config and frames are dropped and the AAC that the transcoder's
worker makes of them (`Transcoder(audio_out=source_input.audio)`) is
interleaved instead. The video is never touched; the AAC frames carry the
source's timeline (the worker stamps them from the first Opus packet's pts,
counting samples), so A/V sync holds whatever the arrival order.

Two bounded waits keep a rendition's track set whole:
- at a session's start, video frames wait for the transcoder's AAC config
  (the packager builds its init segment at the first keyframe; a config
  arriving later would cost a new init segment and a DISCONTINUITY), at
  most `audio_wait_s` or `max_held_items` / `max_held_bytes`;
- at a session's end, the hub's StreamEnd waits for the transcoder's own
  StreamEnd of that session (which follows its last AAC frames), at most
  `end_wait_s`, so the tail of the audio lands in the last segment.
While anything waits the hub's consumer is still read (up to the same
bounds), so the publisher never stalls and the hub does not skip frames.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from ingest.frames import AUDIO, CodecConfig, Frame, StreamEnd, StreamStart

log = logging.getLogger(__name__)

AAC = "aac"


class _HubEnd:
    """The hub consumer returned None: no more hub items."""


_END = _HubEnd()


def _size(item: Any) -> int:
    if isinstance(item, Frame):
        return len(item.data)
    if isinstance(item, CodecConfig):
        return len(item.record)
    return 0


class AudioFeed:
    """The transcoder's side: it `put()`s StreamStart/StreamEnd and the AAC
    config and frames it made, and `end()`s when it is done (like a
    RenditionQueue). `put()` never waits; when full the oldest frame goes."""

    def __init__(self, wake: Callable[[], None], max_items: int) -> None:
        self.items: collections.deque = collections.deque()
        self.max_items = max_items
        self.ended = False
        self.dropped = 0
        self._wake = wake

    def put(self, item: Any) -> None:
        if self.ended:
            return
        if len(self.items) >= self.max_items:
            frame = next((i for i in self.items if isinstance(i, Frame)), None)
            if frame is not None:
                self.items.remove(frame)
            else:
                self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()


class SourceInput:
    """A hub consumer for the `source` packager that swaps non-AAC audio for
    the transcoder's AAC (see the module doc). Use from the event loop only,
    one `get()` at a time."""

    def __init__(self, consumer: Any, *,
                 # A worker process starts in about a second; after this the
                 # session goes on without audio (a late AAC config still joins
                 # it, behind a DISCONTINUITY).
                 audio_wait_s: float = 5.0,
                 # The transcoder drains its worker at a session's end; its
                 # own flush is bounded too (TranscodeSettings.flush_timeout_s).
                 end_wait_s: float = 3.0,
                 # Hub items held while waiting: ~10 s of 30 fps video + audio,
                 # and a memory cap for a high-bitrate publisher.
                 max_held_items: int = 1000,
                 max_held_bytes: int = 24 * 1024 * 1024,
                 # AAC items from the transcoder not yet read: ~10 s of 48 kHz AAC.
                 max_audio_items: int = 500,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.audio_wait_s = audio_wait_s
        self.end_wait_s = end_wait_s
        self.max_held_items = max_held_items
        self.max_held_bytes = max_held_bytes
        self._clock = clock
        self._hub = consumer
        self.audio = AudioFeed(self._wake_up, max_audio_items)
        self._incoming: collections.deque = collections.deque()  # hub items not yet handed out
        self._incoming_bytes = 0
        self._ready: collections.deque = collections.deque()
        self._pump: asyncio.Future | None = None
        self._waiter: asyncio.Future | None = None
        self._hub_read_all = False  # the consumer returned None (queued as _END)
        self._done = False
        self._closed = False
        self._on_foreign: Callable[[], Any] | None = None
        self._foreign_seen = False
        # The hub session being handed out, and what we know of its audio.
        self._session: int | None = None
        self._session_ended = False
        self._transcode = False  # its audio is not AAC: the transcoder's AAC replaces it
        self._audio_ready = False  # the transcoder's AAC config of this session was handed out
        self._gave_up = False  # a wait of this session timed out: no more waiting
        self._has_video = False  # this session has a video config
        self._media_started = False  # its first frame was handed out (or dropped, audio-only)
        self._hold_since: float | None = None
        # Sessions seen on the audio feed.
        self._feed_session: int | None = None
        self._feed_ended: int | None = None

    # ------------------------------------------------------------------ API
    @property
    def closed(self) -> bool:
        """The input has ended (PackagingService: the packager may be replaced)."""
        return self._closed or bool(getattr(self._hub, "closed", False))

    def on_foreign_audio(self, callback: Callable[[], Any]) -> None:
        """Call `callback` (once) when a non-AAC audio config is first seen,
        at once if it already was: the app starts an audio-only transcoder."""
        self._on_foreign = callback
        if self._foreign_seen:
            self._fire_foreign()

    async def get(self) -> Any:
        while True:
            if self._closed or self._done:
                return None
            self._advance()
            if self._ready:
                return self._ready.popleft()
            if self._done:
                return None
            await self._wait()

    def close(self) -> None:
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self._incoming.clear()
        self._ready.clear()
        self._hub.close()
        self._wake_up()

    # ---------------------------------------------------------------- merging
    def _advance(self) -> None:
        while not self._ready and not self._done:
            self._take_audio()
            if self._ready:
                return
            if not self._incoming and not self._pull_nowait():
                return
            head = self._incoming[0]
            if self._blocked(head):
                while self._pull_nowait():
                    pass  # keep reading the hub while we wait
                if self._blocked(head):
                    return
                continue
            self._incoming.popleft()
            self._incoming_bytes -= _size(head)
            self._pass(head)

    def _pass(self, item: Any) -> None:
        if item is _END:
            self._done = True
        elif isinstance(item, StreamStart):
            self._session = item.session_id
            self._session_ended = self._transcode = self._audio_ready = self._gave_up = False
            self._has_video = self._media_started = False
            self._ready.append(item)
        elif isinstance(item, StreamEnd):
            self._session_ended = True
            self._ready.append(item)
        elif isinstance(item, CodecConfig) and item.kind == AUDIO:
            self._transcode = item.codec != AAC
            if self._transcode:
                self._foreign_seen = True
                self._fire_foreign()
            else:
                self._ready.append(item)
        elif isinstance(item, Frame) and item.kind == AUDIO and item.codec != AAC:
            # Replaced by the transcoder's AAC.
            self._media_started = self._media_started or not self._has_video
        else:
            if isinstance(item, CodecConfig):
                self._has_video = True
            elif isinstance(item, Frame):
                self._media_started = True
            self._ready.append(item)

    def _take_audio(self) -> None:
        items = self.audio.items
        while items:
            a = items[0]
            if isinstance(a, StreamStart):
                if self._session is None or a.session_id > self._session:
                    return  # the hub's side has not reached that session yet
                items.popleft()
                self._feed_session = a.session_id
            elif isinstance(a, StreamEnd):
                items.popleft()
                self._feed_ended = a.session_id if self._feed_ended is None else max(self._feed_ended, a.session_id)
            else:
                current = (self._feed_session == self._session and not self._session_ended
                           and (self._feed_ended is None or self._feed_ended < self._feed_session))
                if current and isinstance(a, Frame) and self._audio_ready and not self._media_started:
                    # Not before the session's video config and first frame: an
                    # audio frame first would start an audio-only track set.
                    return
                items.popleft()
                if not current or (not self._audio_ready and not isinstance(a, CodecConfig)):
                    self.audio.dropped += 1  # another session's audio, or frames before their config
                    continue
                if isinstance(a, CodecConfig):
                    self._transcode = self._audio_ready = True
                self._ready.append(a)

    def _feed_done(self, session: int | None) -> bool:
        """The transcoder has delivered everything of `session`."""
        if session is None:
            return True
        if self._feed_ended is not None and self._feed_ended >= session:
            return True
        if self._feed_session is not None and self._feed_session > session:
            return True
        head = self.audio.items[0] if self.audio.items else None
        return isinstance(head, StreamStart) and head.session_id > session

    def _wait_reason(self, item: Any) -> str | None:
        if self._gave_up or not self._transcode or self.audio.ended:
            return None
        if isinstance(item, Frame):
            if self._audio_ready or item.kind == AUDIO:
                return None
            return "start"
        if isinstance(item, StreamEnd) or item is _END:
            session = item.session_id if isinstance(item, StreamEnd) else self._session
            if not self._audio_ready or self._session_ended or self._feed_done(session):
                return None
            return "end"
        return None

    def _blocked(self, item: Any) -> bool:
        reason = self._wait_reason(item)
        if reason is None:
            self._hold_since = None
            return False
        now = self._clock()
        if self._hold_since is None:
            self._hold_since = now
        limit = self.audio_wait_s if reason == "start" else self.end_wait_s
        full = len(self._incoming) >= self.max_held_items or self._incoming_bytes >= self.max_held_bytes
        if full or now - self._hold_since >= limit:
            log.warning("%s: no AAC from the transcoder %s (session %s); going on without it",
                        getattr(self._hub, "name", "source"),
                        "to start with" if reason == "start" else "for the end of the live", self._session)
            self._gave_up = True
            self._hold_since = None
            return False
        return True

    def _timeout(self) -> float | None:
        if self._hold_since is None or not self._incoming:
            return None
        reason = self._wait_reason(self._incoming[0])
        if reason is None:
            return None
        limit = self.audio_wait_s if reason == "start" else self.end_wait_s
        return max(0.0, self._hold_since + limit - self._clock())

    # ------------------------------------------------------------ hub reading
    def _can_pull(self) -> bool:
        return (not self._hub_read_all and len(self._incoming) < self.max_held_items
                and self._incoming_bytes < self.max_held_bytes)

    def _append(self, item: Any) -> None:
        if item is None:
            self._hub_read_all = True
            self._incoming.append(_END)
        else:
            self._incoming.append(item)
            self._incoming_bytes += _size(item)

    def _pull_nowait(self) -> bool:
        if self._pump is not None:
            if not self._pump.done():
                return False
            item, self._pump = self._pump.result(), None
            self._append(item)
            return True
        if not self._can_pull():
            return False
        try:
            item = self._hub.get_nowait()
        except asyncio.QueueEmpty:
            return False
        self._append(item)
        return True

    async def _wait(self) -> None:
        waits: set[asyncio.Future] = set()
        if self._pump is None and self._can_pull():
            self._pump = asyncio.ensure_future(self._hub.get())
        if self._pump is not None:
            waits.add(self._pump)
        self._waiter = asyncio.get_running_loop().create_future()
        waits.add(self._waiter)
        try:
            await asyncio.wait(waits, timeout=self._timeout(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiter = None

    def _wake_up(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fire_foreign(self) -> None:
        callback, self._on_foreign = self._on_foreign, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("starting the audio transcoder failed")
