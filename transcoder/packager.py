"""The LL-HLS packager of one rendition of one room: hub items in, fMP4
init/parts/segments and a live media playlist out.

Pipeline: Frame (ms) -> timescale conversion (the one place: video 90 kHz,
audio counted in samples) -> one-sample hold-back (a sample's duration is the
next dts minus its own, fmp4.md §4) -> Segmenter (where to cut) -> fMP4 bytes
written through the SegmentStore -> MediaPlaylist updated only after the
bytes are on disk (bis 6.2.1) -> waiters notified.

Reconnects (StreamEnd then StreamStart) continue the same playlist after an
EXT-X-DISCONTINUITY, with a new init segment when the codec config changed;
the media timeline continues where the previous publisher stopped, and the
MSN never goes back, even across server restarts (state.json on disk).

state.json is rewritten (atomically) after every playlist change: besides
the restart counters it holds the playlist model (MediaPlaylist.to_state())
and the codec/bandwidth facts of the multivariant playlist, so an origin in
another process (origin/files.py) can serve exactly what this one serves.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame, StreamEnd, StreamStart
from storage.segments import SegmentStore
from transcoder.codecs import codec_string
from transcoder.fmp4 import VIDEO_TIMESCALE, Sample, Track, audio_track, init_segment, media_fragment
from transcoder.hls_settings import HlsSettings
from transcoder.playlist import MediaPlaylist, init_uri, part_uri, segment_uri
from transcoder.rendition import RenditionOutput, RoomTimeline
from transcoder.segmenter import PartReady, Segmenter, SegmentReady

log = logging.getLogger(__name__)

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
AAC_FRAME_SAMPLES = 1024  # samples per AAC frame (ISO 14496-3; 960 is not used by RTMP encoders)
PLAYLIST_FILE = "index.m3u8"
STATE_FILE = "state.json"
SUPPORTED = {VIDEO: {"h264", "hevc"}, AUDIO: {"aac"}}


class Consumer(Protocol):
    async def get(self) -> Any: ...


def to_90k(ticks: int, timescale: int) -> int:
    """Track ticks -> 90 kHz, rounded; applied to absolute positions only,
    so differences of converted positions never drift."""
    return (ticks * VIDEO_TIMESCALE * 2 + timescale) // (2 * timescale)


def from_90k(ticks90: int, timescale: int) -> int:
    """90 kHz -> track ticks, rounded up (a new session never starts before
    the previous one ended)."""
    return -(-ticks90 * timescale // VIDEO_TIMESCALE)


@dataclass(slots=True)
class _Held:
    dts: int
    cto: int
    sync: bool
    data: bytes


class Packager:
    def __init__(
        self,
        room_id: str,
        rendition: str,
        store: SegmentStore,
        settings: HlsSettings = HlsSettings(),
        *,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
        timeline: "RoomTimeline | None" = None,
    ) -> None:
        store.rendition_dir(room_id, rendition)  # validates the ids
        self.room_id = room_id
        self.rendition = rendition
        self.store = store
        self.settings = settings
        self._wall_ms = wall_clock_ms
        self._monotonic = monotonic
        self.output = RenditionOutput(room_id, rendition)
        self.playlist: MediaPlaylist | None = None
        # Per session / per track-set state.
        self._configs: dict[str, CodecConfig] = {}
        self._tracks: dict[str, Track] = {}
        self._map_uri: str | None = None
        self._tracks_ready = False
        self._session_fresh = True
        self._segmenter: Segmenter | None = None
        self._held: dict[str, _Held] = {}
        self._last_duration: dict[str, int] = {}
        self._base_ms = 0
        self._offset: dict[str, int] = {}
        self._audio_next: int | None = None
        self._timeline_end90 = 0  # end of all media so far, 90 kHz
        self._pdt_anchor = (0, 0)  # (wall ms, 90 kHz position)
        # Renditions of one room share the source's anchors so their tfdt and
        # PROGRAM-DATE-TIME agree for the same media time (rfc8216bis 6.2.4).
        self._timeline = timeline
        self._session_id: int | None = None
        self._last_pdt_ms = 0
        self._fragment_seq = 0
        self._seg_parts: list[bytes] = []
        self._seg_start90: int | None = None
        # The last part of a segment, written but listed with its parent.
        self._last_part: tuple[int, int, int, bool, int] | None = None
        self._deletes: collections.deque[tuple[float, list[str]]] = collections.deque()
        # Stats for the multivariant playlist.
        self._bytes_total = 0
        self._dur_total90 = 0
        self._video_frames = 0
        self._video_dur90 = 0

    # ------------------------------------------------------------------ run
    async def run(self, consumer: Consumer) -> None:
        await self._load_state()
        try:
            while True:
                item = await consumer.get()
                if item is None:
                    break
                if isinstance(item, Frame):
                    await self._on_frame(item)
                elif isinstance(item, CodecConfig):
                    await self._on_config(item)
                elif isinstance(item, StreamStart):
                    await self._on_start(item)
                elif isinstance(item, StreamEnd):
                    await self._flush()
                    self._session_fresh = True
            await self._flush()
            self.playlist.end()
            await self._write_playlist()
            log.info("%s/%s: live ended at msn %d", self.room_id, self.rendition, self.playlist.next_msn)
        finally:
            self.output.done = True
            if self.playlist is not None and not self.playlist.ended:
                self.playlist.end()  # release blocked viewers even on failure/cancel
                # ... in other processes too (best effort: the disk may be the failure).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._write_state())
            await asyncio.shield(self.output.notify())

    async def _load_state(self) -> None:
        raw = await self.store.aread(self.room_id, self.rendition, STATE_FILE)
        first_msn, disc = 0, 0
        if raw:
            try:
                state = json.loads(raw)
                first_msn = int(state["next_msn"])
                # A restart is a discontinuity for any client that saw the old playlist.
                disc = int(state["discontinuity_sequence"]) + 1
            except (ValueError, KeyError, TypeError):
                log.warning("%s/%s: unreadable %s, starting at msn 0", self.room_id, self.rendition, STATE_FILE)
        stale = [n for n in await asyncio.to_thread(self.store.list, self.room_id, self.rendition) if n != STATE_FILE]
        if stale:
            await self.store.adelete_many(self.room_id, self.rendition, stale)
        s = self.settings
        self.playlist = MediaPlaylist(
            timescale=VIDEO_TIMESCALE,
            target_duration_s=s.playlist_target_duration_s,
            part_target=s.part_target_ms * 90,
            window_segments=s.window_segments,
            first_msn=first_msn,
            discontinuity_sequence=disc,
        )
        self.output.playlist = self.playlist
        await self._write_state()

    # ------------------------------------------------------------- hub items
    async def _on_start(self, item: StreamStart) -> None:
        await self._flush()
        self._session_fresh = True
        self._session_id = item.session_id
        self._configs.clear()

    async def _on_config(self, cfg: CodecConfig) -> None:
        if cfg.codec not in SUPPORTED.get(cfg.kind, ()):
            log.warning("%s/%s: unsupported %s codec %r ignored", self.room_id, self.rendition, cfg.kind, cfg.codec)
            return
        old = self._configs.get(cfg.kind)
        self._configs[cfg.kind] = cfg
        if self._tracks_ready and (old is None or old.record != cfg.record):
            # New decoder config mid-session: close what we have; the next
            # frame builds a new init segment behind a DISCONTINUITY.
            await self._flush()

    async def _on_frame(self, f: Frame) -> None:
        if f.kind not in self._configs or not f.data:
            return  # no decoder config yet, or an empty frame: undecodable
        if not self._tracks_ready:
            if VIDEO in self._configs and not (f.kind == VIDEO and f.keyframe):
                return  # start every track set on a video keyframe (Apple 7.4)
            await self._build_tracks(f)
        kind = f.kind
        if kind not in self._tracks:
            return
        if kind == VIDEO:
            dts = self._offset[VIDEO] + (f.dts - self._base_ms) * 90
            cto = (f.pts - f.dts) * 90
        else:
            rate = self._tracks[AUDIO].timescale
            expected = self._offset[AUDIO] + (f.dts - self._base_ms) * rate // 1000
            # Count samples; re-anchor only when the ms clock disagrees by
            # more than half a frame (fmp4.md §4: RTMP ms jitter).
            if self._audio_next is None or abs(expected - self._audio_next) > AAC_FRAME_SAMPLES // 2:
                self._audio_next = expected
            dts = self._audio_next
            self._audio_next += AAC_FRAME_SAMPLES
            cto = 0
        if dts < self._offset[kind]:
            return  # before the session's first keyframe
        prev = self._held.get(kind)
        if prev is not None:
            if dts <= prev.dts:
                log.debug("non-increasing %s dts dropped", kind)
                return
            # A gap (the hub skipped frames for a slow consumer, or the
            # encoder stalled) must not become one huge sample that breaks
            # TARGETDURATION: cap it at one part; tfdt then jumps instead.
            cap = self.settings.part_target_ms * self._tracks[kind].timescale // 1000
            await self._push(kind, prev, min(dts - prev.dts, cap))
        self._held[kind] = _Held(dts, cto, f.keyframe or kind == AUDIO, f.data)

    async def _build_tracks(self, first: Frame) -> None:
        tracks: dict[str, Track] = {}
        v = self._configs.get(VIDEO)
        if v is not None:
            tracks[VIDEO] = Track(VIDEO_TRACK_ID, VIDEO, v.codec, VIDEO_TIMESCALE, v.record, v.width, v.height)
        a = self._configs.get(AUDIO)
        if a is not None:
            tracks[AUDIO] = audio_track(AUDIO_TRACK_ID, a.record, a.sample_rate, a.channels)
        if self._session_fresh:
            # Timeline of a new publisher: its first frame lands where the
            # previous media ended (continuous tfdt, DISCONTINUITY marks it).
            anchor = self._timeline.anchor(self._session_id) if self._timeline is not None else None
            if anchor is not None and self.rendition != self._timeline.leader:
                # A transcoded rendition: place its frames on the source's
                # timeline (its keyframes carry the source's timestamps).
                self._base_ms, start90, wall = anchor
            else:
                self._base_ms = first.dts
                start90 = self._timeline_end90
                wall = max(self._wall_ms(), self._last_pdt_ms)
                if self._timeline is not None and self.rendition == self._timeline.leader:
                    self._timeline.set_anchor(self._session_id, (self._base_ms, start90, wall))
            self._offset = {k: from_90k(start90, t.timescale) for k, t in tracks.items()}
            self._audio_next = None
            self._pdt_anchor = (wall, start90)
            self._session_fresh = False
        else:
            for k, t in tracks.items():
                self._offset.setdefault(k, from_90k(self._timeline_end90, t.timescale))
        if self.playlist.has_media():
            self.playlist.mark_discontinuity()
        if tracks != self._tracks or self._map_uri is None:
            self._tracks = tracks
            self._map_uri = init_uri(self.playlist.next_msn)
            data = init_segment(sorted(tracks.values(), key=lambda t: t.track_id))
            await self.store.awrite(self.room_id, self.rendition, self._map_uri, data)
            self._update_codec_info()
        self.playlist.set_map(self._map_uri)
        main = tracks[VIDEO] if VIDEO in tracks else tracks[AUDIO]
        s = self.settings
        self._segmenter = Segmenter(
            has_video=VIDEO in tracks,
            part_target=s.part_target_ms * main.timescale // 1000,
            target_duration=s.target_duration_ms * main.timescale // 1000,
            max_segment_duration=s.max_segment_ms * main.timescale // 1000,
            max_segment_bytes=s.max_segment_bytes,
        )
        self._tracks_ready = True

    def _update_codec_info(self) -> None:
        out = self.output
        names = []
        for k in (VIDEO, AUDIO):
            t = self._tracks.get(k)
            if t is not None:
                try:
                    names.append(codec_string(t.codec, t.record))
                except ValueError:
                    log.warning("%s/%s: no codec string for %s", self.room_id, self.rendition, t.codec)
        out.codecs = ",".join(names)
        v = self._tracks.get(VIDEO)
        out.width, out.height = (v.width, v.height) if v else (0, 0)

    # ---------------------------------------------------------- cutting
    @property
    def _main_kind(self) -> str:
        return VIDEO if VIDEO in self._tracks else AUDIO

    async def _push(self, kind: str, h: _Held, duration: int) -> None:
        self._last_duration[kind] = duration
        track = self._tracks[kind]
        sample = Sample(h.dts, duration, h.cto, h.sync, h.data)
        self._timeline_end90 = max(self._timeline_end90, to_90k(h.dts + duration, track.timescale))
        if kind == VIDEO:
            self._video_frames += 1
            self._video_dur90 += duration
        await self._on_events(self._segmenter.push(track.track_id, sample, main=kind == self._main_kind))

    async def _flush(self) -> None:
        """Publisher gone or track change: emit held samples, close the segment."""
        if self._segmenter is None:
            return
        for kind, h in sorted(self._held.items()):
            default = AAC_FRAME_SAMPLES if kind == AUDIO else 3000  # 1/30 s when nothing is known
            await self._push(kind, h, self._last_duration.get(kind, default))
        self._held.clear()
        await self._on_events(self._segmenter.flush())
        self._segmenter = None
        self._tracks_ready = False

    async def _on_events(self, events: list[PartReady | SegmentReady]) -> None:
        for i, ev in enumerate(events):
            if isinstance(ev, PartReady):
                # The last part of a segment is published together with the
                # segment: published alone, the playlist would hint a part
                # after it that is never made (a void hint, 404: bis 6.2.6).
                last = i + 1 < len(events) and isinstance(events[i + 1], SegmentReady)
                await self._on_part(ev, last_of_segment=last)
            else:
                await self._on_segment(ev)

    async def _on_part(self, ev: PartReady, *, last_of_segment: bool = False) -> None:
        pl = self.playlist
        msn = pl.open.msn if pl.open is not None else pl.next_msn
        runs = []
        for kind in (VIDEO, AUDIO):
            t = self._tracks.get(kind)
            if t is not None and ev.samples.get(t.track_id):
                runs.append((t, ev.samples[t.track_id]))
        self._fragment_seq += 1
        data = media_fragment(self._fragment_seq, runs)
        main = self._tracks[self._main_kind]
        ms = ev.samples.get(main.track_id) or next(iter(ev.samples.values()))
        start90 = to_90k(ms[0].dts, main.timescale)
        end90 = to_90k(ms[-1].dts + ms[-1].duration, main.timescale)
        if ev.index == 0:
            self._seg_start90 = start90
        await self.store.awrite(self.room_id, self.rendition, part_uri(msn, ev.index), data)
        wall, pos = self._pdt_anchor
        pdt = wall + (self._seg_start90 - pos) // 90
        self._last_pdt_ms = max(self._last_pdt_ms, wall + (end90 - pos) // 90)
        self._seg_parts.append(data)
        if not self._dur_total90 and end90 > self._seg_start90:
            self._estimate_first_segment(end90 - self._seg_start90)
        new_part = (msn, ev.index, end90 - start90, ev.independent, pdt)
        if last_of_segment:
            self._last_part = new_part  # _on_segment lists it with its parent
            return
        self._add_part(new_part)
        await self._write_playlist()  # with the state: this MSN is now taken, even if we crash

    def _add_part(self, new_part: tuple[int, int, int, bool, int]) -> None:
        msn, index, duration, independent, pdt = new_part
        part = self.playlist.add_part(duration, independent, pdt_ms=pdt)
        assert part.uri == part_uri(msn, index)

    async def _on_segment(self, ev: SegmentReady) -> None:
        pl = self.playlist
        msn = pl.open.msn if pl.open is not None else pl.next_msn
        data = b"".join(self._seg_parts)
        self._seg_parts = []
        # The parent segment is the concatenation of its parts (fmp4.md §3).
        await self.store.awrite(self.room_id, self.rendition, segment_uri(msn), data)
        if self._last_part is not None:
            # No await between these two: no reader sees the part without its parent.
            self._add_part(self._last_part)
            self._last_part = None
        seg, removed = pl.complete_segment()
        self._account(len(data), seg.duration)
        now = self._monotonic()
        if removed:
            names = [n for s in removed for n in [s.uri] + [p.uri for p in s.parts]]
            self._deletes.append((now + self.settings.delete_grace_s, names))
        due: list[str] = []
        while self._deletes and self._deletes[0][0] <= now:
            due += self._deletes.popleft()[1]
        if due:
            await self.store.adelete_many(self.room_id, self.rendition, due)
        await self._write_playlist()

    def _estimate_first_segment(self, duration90: int) -> None:
        # Players tune in during the first segment too, and BANDWIDTH and
        # FRAME-RATE must be real then (bis 4.4.6.2 REQUIRED, Apple 9.15):
        # estimate from the parts so far; _account() replaces the estimate.
        out = self.output
        out.peak_bandwidth = out.average_bandwidth = sum(map(len, self._seg_parts)) * 8 * VIDEO_TIMESCALE // duration90
        if self._video_dur90:
            out.frame_rate_milli = self._video_frames * VIDEO_TIMESCALE * 1000 // self._video_dur90

    def _account(self, nbytes: int, duration90: int) -> None:
        out = self.output
        if duration90 > 0:
            # The first segment's rate replaces the estimate made from its parts.
            peak = out.peak_bandwidth if self._dur_total90 else 0
            out.peak_bandwidth = max(peak, nbytes * 8 * VIDEO_TIMESCALE // duration90)
        self._bytes_total += nbytes
        self._dur_total90 += duration90
        if self._dur_total90:
            out.average_bandwidth = self._bytes_total * 8 * VIDEO_TIMESCALE // self._dur_total90
        if self._video_dur90:
            out.frame_rate_milli = self._video_frames * VIDEO_TIMESCALE * 1000 // self._video_dur90

    # ----------------------------------------------------------- persistence
    def _restart_counters(self) -> dict:
        # The MSN after any segment that has published parts, and the DSN of
        # the newest segment: a restart continues strictly after both.
        pl = self.playlist
        return {"next_msn": pl.next_msn + (1 if pl.open is not None else 0),
                "discontinuity_sequence": pl.discontinuity_sequence + sum(
                    1 for s in pl.segments + ([pl.open] if pl.open else []) if s.discontinuity)}

    async def remove_media(self) -> None:
        """Delete the playlist and every media file of this rendition, once
        its live has ended for good (PackagingService calls this
        HlsSettings.ended_keep_s after ENDLIST): a room that never publishes
        again must not keep its last window on disk. state.json stays with
        the restart counters only, so a later publish continues the MSN and
        discontinuity sequences; it is rewritten first, so an origin in
        another process (origin/files.py) drops the rendition before its
        files disappear."""
        if self.playlist is None or not self.playlist.ended:
            raise RuntimeError("remove_media() is for a live that has ended")
        state = json.dumps(self._restart_counters()).encode()
        await self.store.awrite(self.room_id, self.rendition, STATE_FILE, state)
        names = [n for n in await asyncio.to_thread(self.store.list, self.room_id, self.rendition) if n != STATE_FILE]
        await self.store.adelete_many(self.room_id, self.rendition, names)
        self._deletes.clear()  # those files are gone already
        log.info("%s/%s: removed %d files of the ended live", self.room_id, self.rendition, len(names))

    async def _write_state(self) -> None:
        pl = self.playlist
        out = self.output
        state = {**self._restart_counters(),
                 # For origins in other processes (origin/files.py).
                 "playlist": pl.to_state(),
                 "output": {"codecs": out.codecs, "width": out.width, "height": out.height,
                            "frame_rate_milli": out.frame_rate_milli, "peak_bandwidth": out.peak_bandwidth,
                            "average_bandwidth": out.average_bandwidth},
                 "modified_at": time.time()}
        await self.store.awrite(self.room_id, self.rendition, STATE_FILE, json.dumps(state).encode())

    async def _write_playlist(self) -> None:
        # The file copies are for readers in other processes (nginx reads the
        # playlist, origin/files.py the state, woken by its rename); the
        # in-process origin renders from the model. The state goes last: a
        # reader woken by it finds the part and the playlist already there.
        await self.store.awrite(self.room_id, self.rendition, PLAYLIST_FILE, self.playlist.render().encode())
        await self._write_state()
        await self.output.notify()
