"""Live thumbnails: every `interval_s`, one keyframe of each live is decoded
and written as `<store root>/<room_id>/thumbnail.jpg`, `width` px wide.

Only that one keyframe is decoded (an IDR needs no other picture), never the
whole stream a second time. Decoding and JPEG encoding run in a thread pool
shared by all rooms (PyAV releases the GIL inside FFmpeg); the pool is
bounded in threads and in queued jobs, so with many rooms a busy pool makes a
room skip one thumbnail rather than pile up work. The file is replaced
atomically (write a temporary file, then rename), so the origin never serves
half a JPEG.
"""
from __future__ import annotations

import asyncio
import fractions
import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av

from ingest.frames import VIDEO, CodecConfig, Frame

log = logging.getLogger(__name__)

THUMBNAIL_FILE = "thumbnail.jpg"


class ThumbnailPool:
    """One bounded pool for every room's thumbnail jobs."""

    def __init__(self, max_workers: int = 2,
                 # Jobs queued or running at once; a room whose job would exceed
                 # this skips a round (a thumbnail is a hint, not a contract).
                 max_pending: int = 16) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="thumbnail")
        self._pending = 0
        self._lock = threading.Lock()
        self.skipped = 0

    def submit(self, fn, *args) -> Future | None:
        with self._lock:
            if self._pending >= self.max_pending:
                self.skipped += 1
                return None
            self._pending += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        # Threads are joined: no thread is left running at exit.
        self._executor.shutdown(wait=True, cancel_futures=True)


def render_jpeg(codec: str, record: bytes, keyframe: bytes, width: int) -> bytes:
    """Blocking: decode one keyframe and encode it as a JPEG `width` px wide."""
    dec = av.CodecContext.create(codec, "r")
    dec.extradata = record
    dec.thread_count = 1  # one picture: frame threads would only add delay
    pictures = dec.decode(av.Packet(keyframe)) + dec.decode(None)
    if not pictures:
        raise ValueError("the keyframe decoded to no picture")
    pic = pictures[0]
    height = max(2, round(pic.height * width / pic.width) // 2 * 2)
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
    enc.time_base = fractions.Fraction(1, 25)
    # Quantiser 2..4: a sharp small picture (a few tens of kB at most).
    enc.options = {"qmin": "2", "qmax": "4"}
    small = pic.reformat(width, height, "yuvj420p")
    small.pts = 0
    packets = enc.encode(small) + enc.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _job(codec: str, record: bytes, keyframe: bytes, width: int, path: Path) -> int:
    data = render_jpeg(codec, record, keyframe, width)
    write_atomic(path, data)
    return len(data)


class Thumbnailer:
    """Thumbnails of one live, from its StreamHub."""

    def __init__(self, room_id: str, hub: Any, store: Any, pool: ThumbnailPool, *,
                 interval_s: float = 10.0, width: int = 320,
                 # The consumer only looks for keyframes; when it falls behind,
                 # the hub skips it to the next keyframe, which is what we want.
                 consumer_max_items: int = 256, consumer_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.room_id = room_id
        self.hub = hub
        self.path = store.room_dir(room_id) / THUMBNAIL_FILE
        self.pool = pool
        self.interval_s = interval_s
        self.width = width + (width & 1)
        self.consumer_max_items = consumer_max_items
        self.consumer_max_bytes = consumer_max_bytes
        self.written = 0
        self.failed = 0
        self._consumer = None
        self._task: asyncio.Task | None = None
        self._job: asyncio.Future | None = None

    def start(self) -> None:
        self._consumer = self.hub.subscribe(f"thumbnails:{self.room_id}", max_items=self.consumer_max_items,
                                            max_bytes=self.consumer_max_bytes)
        self._task = asyncio.create_task(self._run(), name=f"thumbnails:{self.room_id}")
        # Audit: a crash of the loop is logged when it happens (stop() at
        # shutdown would only re-raise it into a gather that ignores it).
        self._task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: thumbnailer failed", self.room_id, exc_info=task.exception())

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        config: CodecConfig | None = None
        due = 0.0
        try:
            while (item := await self._consumer.get()) is not None:
                if isinstance(item, CodecConfig) and item.kind == VIDEO:
                    config = item
                    due = 0.0  # a new picture format: refresh at its first keyframe
                elif (isinstance(item, Frame) and item.kind == VIDEO and item.keyframe and config is not None
                      and time.monotonic() >= due and (self._job is None or self._job.done())):
                    future = self.pool.submit(_job, config.codec, config.record, item.data, self.width, self.path)
                    if future is not None:
                        due = time.monotonic() + self.interval_s
                        self._job = asyncio.wrap_future(future)
                        self._job.add_done_callback(self._finished)
        finally:
            if self._job is not None:
                # Let a running job finish so no write happens after stop().
                await asyncio.gather(self._job, return_exceptions=True)

    def _finished(self, job: asyncio.Future) -> None:
        if job.cancelled():
            return
        if job.exception() is not None:
            self.failed += 1
            log.warning("%s: thumbnail failed: %s", self.room_id, job.exception())
        else:
            self.written += 1
