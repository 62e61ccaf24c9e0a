"""The transcode supervisor: one per live, in the server process.

It reads the live's StreamHub through a bounded consumer, feeds the source
video (and Opus audio, if any) to a worker process (`transcoder.worker`, or
`transcoder.ffmpeg_worker` when transcode.backend = "ffmpeg") over the
`workerproto` pipes, and hands each encoded rendition to its own packager
through a small bounded `RenditionQueue`. AAC audio never goes to the
worker: it is passed through untouched, released into every rendition in
step with the worker's progress so each rendition stays interleaved. The
AAC made of a non-AAC source also goes to `audio_out` (the source
rendition's `source_audio.SourceInput`), and when no ladder rendition is
encoded (none below the source height, an HEVC source, or an empty ladder)
the worker runs in audio-only mode for it: no video is sent, only the Opus.
An AAC live without a ladder rendition never starts a worker.

It restarts a crashed or stalled worker (at most `max_restarts_per_minute`),
drops the lowest renditions first when the worker falls behind real time
(the source rendition is packaged elsewhere and never affected), and always
kills and reaps its worker on the final end and on stop(): no orphans.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from transcoder.alignment import DecodeTimeAligner
from transcoder.ladder import Rendition, renditions_for
from transcoder.rendition_queue import RenditionQueue
from transcoder.transcode_settings import TranscodeSettings
from transcoder.workerproto import (
    F_KEYFRAME, T_CONFIG, T_DISABLE, T_DONE, T_ERROR, T_FLUSH, T_FRAME, T_OUT_CONFIG, T_OUT_FRAME, T_SETUP,
    TRACK_AUDIO, TRACK_VIDEO, Message, MessageReader, ProtocolError, config_payload, encode, json_message,
    parse_config_payload,
)

log = logging.getLogger(__name__)

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
_WORKER_MODULES = {"pyav": "transcoder.worker", "ffmpeg": "transcoder.ffmpeg_worker"}
_READ_SIZE = 1 << 16

__all__ = ["RenditionQueue", "TranscodeSettings", "Transcoder"]


class _WorkerGone(Exception):
    pass


class Transcoder:
    """Transcodes one live's video into the ladder below its source height.

    `make_packager(rendition_name, queue)` is called once per rendition when
    the source size is known; it starts packaging `queue` (anything with
    `async get()`), e.g. `PackagingService.start_rendition(room_id, name, queue)`.

    `audio_out` (optional, `put(item)` / `end()`, e.g. `SourceInput.audio`)
    receives StreamStart/StreamEnd and the AAC config and frames transcoded
    from a non-AAC source, in order, then `end()` when the transcoder stops.
    """

    def __init__(self, room_id: str, hub: Any, ladder: list[Rendition], settings: TranscodeSettings,
                 make_packager: Callable[[str, RenditionQueue], Any], *,
                 audio_out: Any = None,
                 # Without a ladder rendition, whether the audio needs the
                 # worker is decided once both codec configs are known (RTMP
                 # publishers send both sequence headers first), or after
                 # this many frames of a stream that has only one of them.
                 decide_after_frames: int = 90,
                 python: str = sys.executable) -> None:
        if settings.backend not in _WORKER_MODULES:
            raise ValueError(f"unknown transcode backend {settings.backend!r}")
        self.room_id = room_id
        self.hub = hub
        self.ladder = sorted(ladder, key=lambda r: -r.height)
        self.settings = settings
        self.make_packager = make_packager
        self.python = python
        self.audio_out = audio_out
        self.decide_after_frames = decide_after_frames
        self.audio_only = False  # the worker transcodes the audio alone (no rendition)
        self._ladder_chosen = False
        self._no_ladder = "not_needed"  # the state when neither video nor audio needs the worker
        self._video_seen = False
        self._frames_seen = 0
        self.state = "waiting"  # waiting | running | not_needed | unsupported | failed | ended | stopped
        self.renditions: list[Rendition] = []
        self.queues: list[RenditionQueue] = []
        self.sizes: list[tuple[int, int]] = []
        self.active: list[bool] = []
        # A rendition's video config comes from the worker at its first
        # keyframe; pass-through audio given to the packager before it would
        # start an audio-only track set (then a DISCONTINUITY). Until then
        # its audio waits here (bounded by max_pending_items).
        self._video_ready: list[bool] = []
        self._early: list[collections.deque] = []
        self._aligner = DecodeTimeAligner(0)
        self.restarts = 0
        self.degradations = 0
        self._restart_times: collections.deque[float] = collections.deque()
        self._consumer = None
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task | None = None
        self._stderr_task: asyncio.Task | None = None
        self._seq = 0
        self._acked = 0
        self._sent_at: collections.deque[tuple[int, float]] = collections.deque()
        self._progress = asyncio.Event()
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self._start_item: StreamStart | None = None
        self._video_cfg: CodecConfig | None = None
        self._audio_cfg: CodecConfig | None = None
        self._need_keyframe = True
        self._last_degrade: float | None = None
        self._seen_overflows = 0
        self.lag_ms = 0
        # The last worker pids started (for tests and logs); bounded: a live
        # can run for days with a restart now and then.
        self.pids: collections.deque[int] = collections.deque(maxlen=64)

    # ------------------------------------------------------------------ API
    def start(self) -> None:
        self._consumer = self.hub.subscribe(f"transcoder:{self.room_id}",
                                            max_items=self.settings.consumer_max_items,
                                            max_bytes=self.settings.consumer_max_bytes)
        self._task = asyncio.create_task(self._run(), name=f"transcoder:{self.room_id}")
        # Audit: a crash of the supervisor is logged when it happens, not
        # only surfaced (or swallowed by a gather) when someone calls stop().
        self._task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: transcoder failed", self.room_id, exc_info=task.exception())
            self.state = "failed"

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._stop_worker()
        self._end_queues()
        if self._consumer is not None:
            self._consumer.close()
        if self.state not in ("failed", "not_needed", "unsupported"):
            self.state = "stopped"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def status(self) -> dict:
        return {
            "state": self.state,
            "backend": self.settings.backend,
            "pid": self.pid,
            "restarts": self.restarts,
            "degradations": self.degradations,
            "lag_ms": self.lag_ms,
            "audio_only": self.audio_only,
            "input_dropped": getattr(self._consumer, "dropped", 0),
            "renditions": [
                {"name": r.name, "width": size[0], "height": size[1] or r.height, "video_kbps": r.video_kbps,
                 "state": "active" if on else "dropped", "frames": q.frames, "bytes": q.bytes, "dropped": q.dropped}
                for r, q, size, on in zip(self.renditions, self.queues, self.sizes, self.active)
            ],
        }

    # --------------------------------------------------------------- feeding
    async def _run(self) -> None:
        try:
            while True:
                item = await self._consumer.get()
                if item is None:
                    break
                await self._feed(item)
                if self.state in ("not_needed", "unsupported", "failed"):
                    self._consumer.close()
                    break
            await self._finish()
        finally:
            await self._stop_worker()
            self._end_queues()

    async def _feed(self, item) -> None:
        if isinstance(item, Frame):
            if self.state == "waiting" and not self.renditions:
                self._frames_seen += 1
                await self._decide()
                if self.state != "running":
                    return
            if item.kind == VIDEO:
                if self._video_cfg is None or not self.renditions:
                    return
                if self._need_keyframe:
                    if not item.keyframe:
                        return
                    self._need_keyframe = False
                if item.keyframe:
                    self._aligner.source_keyframe(item.dts, item.pts)
                await self._send(Message(T_FRAME, TRACK_VIDEO, F_KEYFRAME if item.keyframe else 0,
                                         item.dts, item.pts, 0, item.data))
            elif self._audio_cfg is not None and self._audio_cfg.codec == "aac":
                self._hold(item)
            elif self._audio_cfg is not None and self._proc is not None:
                await self._send(Message(T_FRAME, TRACK_AUDIO, F_KEYFRAME, item.dts, item.pts, 0, item.data))
        elif isinstance(item, CodecConfig):
            if item.kind == VIDEO:
                await self._on_video_config(item)
            elif item.kind == AUDIO:
                self._audio_cfg = item
                if item.codec == "aac":
                    self._hold(item)
                elif self._proc is not None:
                    await self._send_audio_config()
                elif self.state == "waiting" and not self.renditions and self._video_seen:
                    await self._decide()
        elif isinstance(item, StreamStart):
            self._start_item = item
            self._need_keyframe = True
            self._hold(item)
        elif isinstance(item, StreamEnd):
            if self._proc is not None:
                await self._send(Message(T_FLUSH))
            self._hold(item)

    async def _on_video_config(self, cfg: CodecConfig) -> None:
        self._video_seen = True
        if cfg.codec != "h264":
            if self.renditions:
                log.warning("%s: cannot transcode %s video; source rendition only", self.room_id, cfg.codec)
                self.state = "unsupported"
            elif not self._ladder_chosen:
                self._ladder_chosen = True
                if self.ladder:
                    log.warning("%s: cannot transcode %s video; no ladder", self.room_id, cfg.codec)
                self._no_ladder = "unsupported"
            return
        self._video_cfg = cfg
        if not self._ladder_chosen:
            self._ladder_chosen = True
            chosen = renditions_for(self.ladder, cfg.height)
            if chosen:
                self._open_renditions(chosen, cfg)
            elif self.ladder:
                log.info("%s: source is %dp, no ladder rendition below it", self.room_id, cfg.height)
        if not self.renditions:
            if self.state == "waiting" and self._audio_cfg is not None:
                await self._decide()
            return  # audio-only, or nothing to do (decided at the first frame)
        if self._proc is None:
            await self._start_worker()
        else:
            await self._send(json_message(T_CONFIG, config_payload("h264", cfg.record, cfg.width, cfg.height),
                                          track=TRACK_VIDEO))

    async def _decide(self) -> None:
        """No ladder rendition: run the worker for the audio alone when it is
        not AAC, else stop (state not_needed, or unsupported for HEVC)."""
        both_known = self._video_seen and self._audio_cfg is not None
        if not both_known and self._frames_seen < self.decide_after_frames:
            return
        self._ladder_chosen = True  # an audio-only worker keeps its mode for the live
        if self._audio_cfg is not None and self._audio_cfg.codec != "aac":
            self.audio_only = True
            self.state = "running"
            await self._start_worker()
        else:
            self.state = self._no_ladder

    def _open_renditions(self, chosen: list[Rendition], cfg: CodecConfig) -> None:
        self.renditions = chosen
        self._aligner = DecodeTimeAligner(len(chosen))
        for r in chosen:
            q = RenditionQueue(r.name, self.settings.queue_max_items)
            # The packager starts mid-stream: give it the session and audio config.
            if self._start_item is not None:
                q.put(self._start_item)
            if self._audio_cfg is not None and self._audio_cfg.codec == "aac":
                q.put(self._audio_cfg)
            self.queues.append(q)
            self.sizes.append((r.width_for(cfg.width, cfg.height) if cfg.height else 0, r.height))
            self.active.append(True)
            self._video_ready.append(False)
            self._early.append(collections.deque(maxlen=self.settings.max_pending_items))
        self._pending.clear()  # already given to the new queues above
        for r, q in zip(chosen, self.queues):
            self.make_packager(r.name, q)
        self.state = "running"

    def _hold(self, item) -> None:
        """Pass-through items wait until the worker has processed every
        message sent before them, so renditions receive them in order."""
        if not self.queues and self.audio_out is None:
            return
        self._pending.append((self._seq, item))
        self._release()
        while len(self._pending) > self.settings.max_pending_items:
            self._deliver_all(self._pending.popleft()[1])

    def _release(self) -> None:
        while self._pending and self._pending[0][0] <= self._acked:
            self._deliver_all(self._pending.popleft()[1])

    def _deliver_all(self, item) -> None:
        media = isinstance(item, Frame)
        for q, on, ready, early in zip(self.queues, self.active, self._video_ready, self._early):
            if not on:
                continue
            if media and not ready:
                early.append(item)
                continue
            if not ready:
                early.clear()  # a session boundary: that audio belongs to no video
            q.put(item)
        if self.audio_out is not None and isinstance(item, (StreamStart, StreamEnd)):
            self.audio_out.put(item)

    async def _send(self, msg: Message, *, retry: bool = True) -> None:
        while True:
            if self._proc is None or self._proc.returncode is not None or self._reader_task.done():
                await self._restart_worker()
                if self._proc is None:
                    return
                if msg.type == T_FRAME and msg.track == TRACK_VIDEO and not msg.keyframe:
                    self._need_keyframe = True
                    return
            try:
                await self._wait_in_flight()
                self._seq += 1
                self._sent_at.append((self._seq, time.monotonic()))
                self._proc.stdin.write(encode(Message(msg.type, msg.track, msg.flags, msg.dts, msg.pts,
                                                      self._seq, msg.payload)))
                try:
                    # Audit: a worker that stops reading fills the pipe; the
                    # drain is bounded like the wait for acknowledgements.
                    async with asyncio.timeout(self.settings.stall_timeout_s):
                        await self._proc.stdin.drain()
                except TimeoutError:
                    raise _WorkerGone(f"worker did not read its input for {self.settings.stall_timeout_s} s") from None
                self._check_lag()
                return
            except (_WorkerGone, ConnectionError, BrokenPipeError) as exc:
                log.warning("%s: transcode worker lost: %s", self.room_id, str(exc) or type(exc).__name__)
                await self._stop_worker()
                if not retry:
                    return

    async def _wait_in_flight(self) -> None:
        deadline = time.monotonic() + self.settings.stall_timeout_s
        while self._seq - self._acked >= self.settings.max_in_flight:
            if self._reader_task.done():
                raise _WorkerGone("worker exited")
            self._progress.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerGone(f"no progress for {self.settings.stall_timeout_s} s")
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                pass

    def _check_lag(self) -> None:
        now = time.monotonic()
        self.lag_ms = int((now - self._sent_at[0][1]) * 1000) if self._sent_at else 0
        overflows = getattr(self._consumer, "overflows", 0)
        behind = self.lag_ms >= self.settings.degrade_lag_ms or overflows > self._seen_overflows
        self._seen_overflows = overflows
        if behind and (self._last_degrade is None or now - self._last_degrade >= self.settings.degrade_cooldown_s):
            self._last_degrade = now
            self._drop_lowest()

    def _drop_lowest(self) -> None:
        for i in range(len(self.renditions) - 1, -1, -1):
            if self.active[i]:
                log.warning("%s: transcoder behind real time by %d ms: dropping %s", self.room_id, self.lag_ms,
                            self.renditions[i].name)
                self.active[i] = False
                self.degradations += 1
                self.queues[i].end()  # its playlist ends; the others carry on
                if self._proc is not None and self._proc.returncode is None:
                    self._proc.stdin.write(encode(Message(T_DISABLE, track=i)))
                if not any(self.active):
                    self.state = "failed"
                return

    # --------------------------------------------------------------- worker
    async def _start_worker(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        self._proc = await asyncio.create_subprocess_exec(
            self.python, "-m", _WORKER_MODULES[self.settings.backend],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=_PROJECT_ROOT)
        self.pids.append(self._proc.pid)
        self._reader_task = asyncio.create_task(self._read_worker(self._proc), name=f"transcoder-read:{self.room_id}")
        self._stderr_task = asyncio.create_task(self._log_stderr(self._proc), name=f"transcoder-log:{self.room_id}")
        fps = 30
        meta = getattr(self._start_item, "metadata", None) or {}
        try:
            fps = max(1, min(240, round(float(meta.get("framerate") or meta.get("fps") or 30))))
        except (TypeError, ValueError):
            pass
        proc = self._proc
        proc.stdin.write(encode(json_message(T_SETUP, self.settings.worker_setup(self.renditions, fps))))
        for i, on in enumerate(self.active):
            if not on:
                proc.stdin.write(encode(Message(T_DISABLE, track=i)))
        cfg = self._video_cfg
        if self.renditions and cfg is not None:
            proc.stdin.write(encode(json_message(T_CONFIG, config_payload("h264", cfg.record, cfg.width, cfg.height),
                                                 track=TRACK_VIDEO)))
        if self._audio_cfg is not None and self._audio_cfg.codec != "aac":
            await self._send_audio_config()
        self._need_keyframe = True
        log.info("%s: transcode worker %d started (%s): %s", self.room_id, proc.pid, self.settings.backend,
                 ", ".join(r.name for r in self.renditions) or f"{self._audio_cfg.codec} audio to AAC only")

    async def _send_audio_config(self) -> None:
        a = self._audio_cfg
        await self._send(json_message(T_CONFIG, config_payload(a.codec, a.record, sample_rate=a.sample_rate,
                                                               channels=a.channels), track=TRACK_AUDIO))

    async def _restart_worker(self) -> None:
        await self._stop_worker()
        if self.state != "running":
            return
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > 60:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.settings.max_restarts_per_minute:
            log.error("%s: transcode worker failed %d times in a minute; source rendition only",
                      self.room_id, len(self._restart_times))
            self.state = "failed"
            return
        self._restart_times.append(now)
        self.restarts += 1
        # What the dead worker never acknowledged is gone; let the held items through.
        self._acked = self._seq
        self._sent_at.clear()
        self._release()
        await self._start_worker()

    async def _read_worker(self, proc: asyncio.subprocess.Process) -> None:
        reader = MessageReader()
        try:
            while data := await proc.stdout.read(_READ_SIZE):
                reader.receive_data(data)
                for msg in reader.messages():
                    self._on_output(msg)
        except ProtocolError as exc:
            log.error("%s: transcode worker %d broke the protocol: %s", self.room_id, proc.pid, exc)
            proc.kill()
        except Exception:
            # Audit: a bug of ours handling the worker's output would
            # otherwise vanish in _stop_worker's gather(return_exceptions=True)
            # and show only as silent worker restarts.
            log.exception("%s: handling transcode worker %d output failed", self.room_id, proc.pid)
            proc.kill()
        finally:
            self._progress.set()

    async def _log_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Drain the worker's stderr into our log, bounded in line length and rate."""
        limit, per_s = self.settings.stderr_line_bytes, self.settings.stderr_lines_per_s
        partial = b""
        window, logged, suppressed = 0.0, 0, 0
        while chunk := await proc.stderr.read(_READ_SIZE):
            *lines, partial = (partial + chunk).split(b"\n")
            partial = partial[:limit]  # a line without an end is cut, not buffered forever
            now = time.monotonic()
            for line in lines:
                if now - window >= 1.0:
                    if suppressed:
                        log.warning("%s: worker %d: %d more stderr lines not logged", self.room_id, proc.pid,
                                    suppressed)
                    window, logged, suppressed = now, 0, 0
                if logged >= per_s:
                    suppressed += 1
                    continue
                logged += 1
                text = line[:limit].decode("utf-8", "replace").rstrip()
                if text:
                    log.warning("%s: worker %d: %s", self.room_id, proc.pid, text)
        if suppressed:
            log.warning("%s: worker %d: %d more stderr lines not logged", self.room_id, proc.pid, suppressed)

    def _on_output(self, msg: Message) -> None:
        if msg.type == T_DONE:
            self._acked = max(self._acked, msg.seq)
            while self._sent_at and self._sent_at[0][0] <= self._acked:
                self._sent_at.popleft()
            self._release()
            self._progress.set()
        elif msg.type == T_OUT_FRAME:
            if msg.track == TRACK_AUDIO:
                frame = Frame(AUDIO, "aac", msg.dts, msg.pts, True, msg.payload)
                self._deliver_all(frame)
                if self.audio_out is not None:
                    self.audio_out.put(frame)
            elif msg.track < len(self.queues) and self.active[msg.track]:
                dts = self._aligner.output(msg.track, msg.dts, msg.pts, msg.keyframe)
                self.queues[msg.track].put(Frame(VIDEO, "h264", dts, msg.pts, msg.keyframe, msg.payload))
        elif msg.type == T_OUT_CONFIG:
            codec, record, w, h, rate, channels = parse_config_payload(msg.json())
            if msg.track == TRACK_AUDIO:
                config = CodecConfig(AUDIO, codec, record, sample_rate=rate, channels=channels)
                self._deliver_all(config)
                if self.audio_out is not None:
                    self.audio_out.put(config)
            elif msg.track < len(self.queues):
                self.sizes[msg.track] = (w, h)
                queue = self.queues[msg.track]
                queue.put(CodecConfig(VIDEO, codec, record, width=w, height=h))
                self._video_ready[msg.track] = True
                early = self._early[msg.track]
                while early:
                    queue.put(early.popleft())
        elif msg.type == T_ERROR:
            log.error("%s: transcode worker error: %s", self.room_id, msg.json().get("message"))

    async def _stop_worker(self) -> None:
        """Close stdin (the worker exits on EOF), then kill if it lingers; always reap."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                try:
                    proc.stdin.close()
                except (ConnectionError, RuntimeError):
                    pass
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), self.settings.exit_timeout_s)
                except TimeoutError:
                    proc.kill()
                except asyncio.CancelledError:
                    proc.kill()
                    await proc.wait()
                    raise
            await proc.wait()
        task, self._reader_task = self._reader_task, None
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        task, self._stderr_task = self._stderr_task, None
        if task is not None:
            # The worker has exited: its last lines are in the pipe (unless an
            # ffmpeg child still holds it open: then do not wait for it).
            await asyncio.wait({task}, timeout=0.5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _finish(self) -> None:
        """The live is over: drain the worker so the renditions get their last frames."""
        if self._proc is not None and self._proc.returncode is None and self.state == "running":
            try:
                await self._send(Message(T_FLUSH), retry=False)
                target = self._seq
                deadline = time.monotonic() + self.settings.flush_timeout_s
                while self._acked < target and self._reader_task is not None and not self._reader_task.done():
                    self._progress.clear()
                    await asyncio.wait_for(self._progress.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("%s: transcode worker did not drain in time", self.room_id)
        self._acked = self._seq
        self._release()
        if self.state == "running":
            self.state = "ended"

    def _end_queues(self) -> None:
        for q in self.queues:
            q.end()
        if self.audio_out is not None:
            self.audio_out.end()


def metric_families(streams: list[dict]) -> list[tuple[str, str, str, list[tuple[dict, float]]]]:
    """Prometheus families of the transcoders of `streams` (the stream
    listing: dicts with room_id, live_id and transcoder = Transcoder.status()
    or None), in the (name, type, help, samples) form of livecast/metrics.py."""
    states, restarts, degradations, lag, renditions, dropped = [], [], [], [], [], []
    for s in streams:
        t = s.get("transcoder")
        if not t:
            continue
        labels = {"room": s.get("room_id") or "", "live": str(s.get("live_id", ""))}
        states.append(({**labels, "state": t["state"]}, 1))
        restarts.append((labels, t["restarts"]))
        degradations.append((labels, t["degradations"]))
        lag.append((labels, t["lag_ms"] / 1000))
        for r in t["renditions"]:
            rl = {**labels, "rendition": r["name"]}
            renditions.append((rl, 1 if r["state"] == "active" else 0))
            dropped.append((rl, r["dropped"]))
    return [
        ("livecast_transcoder_state", "gauge", "1 for the transcoder state of each live "
         "(running, failed, not_needed, unsupported, ended, ...).", states),
        ("livecast_transcoder_restarts_total", "counter", "Worker restarts after a crash or stall.", restarts),
        ("livecast_transcoder_degradations_total", "counter", "Renditions dropped for falling behind real time.",
         degradations),
        ("livecast_transcoder_lag_seconds", "gauge", "Age of the oldest input the worker has not processed.", lag),
        ("livecast_rendition_active", "gauge", "1 while a ladder rendition is encoded, 0 once dropped.", renditions),
        ("livecast_rendition_dropped_frames_total", "counter", "Frames a slow rendition packager lost.", dropped),
    ]
