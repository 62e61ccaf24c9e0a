"""LL-HLS playlists as a pure model + rendering (no I/O).

Media playlist: draft-pantos-hls-rfc8216bis §4.4.3 (TARGETDURATION,
MEDIA-SEQUENCE, DISCONTINUITY-SEQUENCE, SERVER-CONTROL, PART-INF), §4.4.4
(EXTINF, DISCONTINUITY, MAP, PROGRAM-DATE-TIME, PART), §4.4.5 (SKIP,
PRELOAD-HINT, RENDITION-REPORT), §6.2.2 (sliding window), §6.2.5 (blocking
reload and delta updates). The multivariant playlist is multivariant.py.
See shared/reference/ll-hls.md.

Durations are integer ticks of the playlist's timescale (the main track's:
90 kHz video or the audio sample rate); they become decimal text only here.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from enum import Enum

INIT_RE = re.compile(r"^init-(\d{1,19})\.mp4$")
SEGMENT_RE = re.compile(r"^seg(\d{1,19})\.m4s$")
PART_RE = re.compile(r"^seg(\d{1,19})\.(\d{1,6})\.m4s$")


def segment_uri(msn: int) -> str:
    return f"seg{msn}.m4s"


def part_uri(msn: int, index: int) -> str:
    return f"seg{msn}.{index}.m4s"


def init_uri(first_msn: int) -> str:
    # Named after the first segment that uses it: unique across reconnects
    # and restarts (MSNs never repeat), so it can be cached as immutable.
    return f"init-{first_msn}.mp4"


def fmt_duration(ticks: int, timescale: int) -> str:
    """Seconds with 5 decimals, rounded to nearest: a value <= a bound with
    <= 5 decimals never renders above it."""
    q = (ticks * 200_000 + timescale) // (2 * timescale)
    return f"{q // 100_000}.{q % 100_000:05d}"


def fmt_pdt(epoch_ms: int) -> str:
    t = _dt.datetime.fromtimestamp(epoch_ms // 1000, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


@dataclass(slots=True)
class Part:
    uri: str
    duration: int
    independent: bool


@dataclass(slots=True)
class Segment:
    msn: int
    map_uri: str
    pdt_ms: int  # wall clock of the first sample, ms since the epoch
    discontinuity: bool
    parts: list[Part] = field(default_factory=list)
    duration: int = 0
    complete: bool = False

    @property
    def uri(self) -> str:
        return segment_uri(self.msn)


class Block(Enum):
    """Answer to "can this blocking reload be answered now?" (bis 6.2.5.2)."""

    READY = "ready"
    WAIT = "wait"
    TOO_FAR = "too_far"  # 400 Bad Request


@dataclass(frozen=True, slots=True)
class RenditionReport:
    uri: str  # relative to this playlist, e.g. "../720p/index.m3u8"
    last_msn: int
    last_part: int


class MediaPlaylist:
    def __init__(
        self,
        *,
        timescale: int,
        target_duration_s: int,
        part_target: int,  # ticks
        window_segments: int = 6,
        first_msn: int = 0,
        discontinuity_sequence: int = 0,
    ) -> None:
        self.timescale = timescale
        self.target_duration_s = target_duration_s
        self.part_target = part_target
        self.window_segments = window_segments
        self.media_sequence = first_msn
        self.discontinuity_sequence = discontinuity_sequence
        self.next_msn = first_msn  # MSN of the open (or next) segment
        self.segments: list[Segment] = []  # complete, in the window
        self.open: Segment | None = None
        self.ended = False
        self.map_uri: str | None = None
        self._pending_discontinuity = False

    # --------------------------------------------------------------- updates
    def set_map(self, uri: str) -> None:
        """Init segment for segments opened from now on."""
        self.map_uri = uri

    def mark_discontinuity(self) -> None:
        """The next segment opened follows a timestamp/format change."""
        if self.segments or self.open:
            self._pending_discontinuity = True

    def add_part(self, duration: int, independent: bool, *, pdt_ms: int) -> Part:
        if self.ended:
            raise RuntimeError("playlist has ended")
        if self.map_uri is None:
            raise RuntimeError("set_map() before the first part")
        if self.open is None:
            self.open = Segment(self.next_msn, self.map_uri, pdt_ms, self._pending_discontinuity)
            self._pending_discontinuity = False
        part = Part(part_uri(self.open.msn, len(self.open.parts)), duration, independent)
        self.open.parts.append(part)
        self.open.duration += duration
        return part

    def complete_segment(self) -> tuple[Segment, list[Segment]]:
        """Close the open segment; returns it and the segments that slid out."""
        if self.open is None or not self.open.parts:
            raise RuntimeError("no open segment with parts")
        seg, self.open = self.open, None
        seg.complete = True
        self.segments.append(seg)
        self.next_msn = seg.msn + 1
        return seg, self._slide()

    def end(self) -> None:
        """EXT-X-ENDLIST: the live is over (no hint, blocking ignored)."""
        self.ended = True
        self.open = None  # parts of an unfinished segment were flushed before

    def _slide(self) -> list[Segment]:
        removed = []
        min_window = 3 * self.target_duration_s * self.timescale  # bis 6.2.2
        total = sum(s.duration for s in self.segments)
        while len(self.segments) > self.window_segments and total - self.segments[0].duration >= min_window:
            seg = self.segments.pop(0)
            total -= seg.duration
            removed.append(seg)
            self.media_sequence = seg.msn + 1
            # bis 6.2.2: the sequence counts DISCONTINUITY tags that slid out.
            if seg.discontinuity:
                self.discontinuity_sequence += 1
        return removed

    # ----------------------------------------------------------------- state
    # A plain-JSON snapshot of the model, so another process (origin/files.py)
    # can serve the same playlist from disk. Part URIs are derived from
    # (MSN, index) exactly as add_part() names them, so they are not stored.
    STATE_VERSION = 1

    def to_state(self) -> dict:
        def seg(s: Segment) -> dict:
            return {"msn": s.msn, "map": s.map_uri, "pdt_ms": s.pdt_ms, "disc": s.discontinuity,
                    "parts": [[p.duration, p.independent] for p in s.parts], "complete": s.complete}

        return {
            "v": self.STATE_VERSION,
            "timescale": self.timescale,
            "target_duration_s": self.target_duration_s,
            "part_target": self.part_target,
            "window_segments": self.window_segments,
            "media_sequence": self.media_sequence,
            "discontinuity_sequence": self.discontinuity_sequence,
            "next_msn": self.next_msn,
            "segments": [seg(s) for s in self.segments],
            "open": seg(self.open) if self.open is not None else None,
            "ended": self.ended,
            "map": self.map_uri,
            "pending_disc": self._pending_discontinuity,
        }

    @classmethod
    def from_state(cls, state: dict) -> "MediaPlaylist":
        """Inverse of to_state(); ValueError on anything malformed (the file
        may come from another process or another version)."""
        try:
            if state["v"] != cls.STATE_VERSION:
                raise ValueError(f"unknown playlist state version {state['v']!r}")
            pl = cls(timescale=_pos(state["timescale"]), target_duration_s=_pos(state["target_duration_s"]),
                     part_target=_pos(state["part_target"]), window_segments=_pos(state["window_segments"]),
                     first_msn=_nat(state["media_sequence"]),
                     discontinuity_sequence=_nat(state["discontinuity_sequence"]))
            pl.next_msn = _nat(state["next_msn"])

            def seg(d: dict) -> Segment:
                msn = _nat(d["msn"])
                s = Segment(msn, _str(d["map"]), _nat(d["pdt_ms"]), bool(d["disc"]), complete=bool(d["complete"]))
                for i, (duration, independent) in enumerate(d["parts"]):
                    s.parts.append(Part(part_uri(msn, i), _nat(duration), bool(independent)))
                s.duration = sum(p.duration for p in s.parts)
                return s

            pl.segments = [seg(d) for d in state["segments"]]
            pl.open = seg(state["open"]) if state["open"] is not None else None
            pl.ended = bool(state["ended"])
            pl.map_uri = _str(state["map"]) if state["map"] is not None else None
            pl._pending_discontinuity = bool(state["pending_disc"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed playlist state: {exc!r}") from None
        return pl

    # --------------------------------------------------------------- queries
    def last_part(self) -> tuple[int, int] | None:
        """(MSN, part index) of the newest part, if any."""
        if self.open is not None and self.open.parts:
            return self.open.msn, len(self.open.parts) - 1
        for seg in reversed(self.segments):
            if seg.parts:
                return seg.msn, len(seg.parts) - 1
        return None

    def has_media(self) -> bool:
        return bool(self.segments) or bool(self.open and self.open.parts)

    def preload_hint(self) -> str | None:
        if self.ended:
            return None
        if self.open is not None:
            return part_uri(self.open.msn, len(self.open.parts))
        return part_uri(self.next_msn, 0)

    def map_hint(self) -> str | None:
        """The init segment the next part needs, if no listed segment uses it
        yet (a reconnect or codec change): EXT-X-PRELOAD-HINT:TYPE=MAP (bis
        4.4.5.3). The packager writes it before set_map(), so it exists."""
        if self.ended or self.open is not None or self.map_uri is None:
            return None
        if self.segments and self.segments[-1].map_uri == self.map_uri:
            return None
        return self.map_uri

    def has_file(self, name: str) -> bool:
        """Is `name` an init segment, segment or part of the current model?
        The packager publishes a file only after its bytes are on disk and
        deletes it only after it left the window (plus a grace period), so
        the origin can serve these without asking the filesystem."""
        if m := PART_RE.match(name):
            return self.part_published(int(m.group(1)), int(m.group(2))) is True
        if m := SEGMENT_RE.match(name):
            msn = int(m.group(1))
            return any(s.msn == msn for s in self.segments)
        if INIT_RE.match(name):
            return name == self.map_uri or any(
                s.map_uri == name for s in self.segments + ([self.open] if self.open else []))
        return False

    def part_published(self, msn: int, index: int) -> bool | None:
        """True: listed; False: will never exist; None: may still come."""
        for seg in ([self.open] if self.open else []) + self.segments[::-1]:
            if seg.msn == msn:
                if index < len(seg.parts):
                    return True
                return False if seg.complete else None
        if self.ended or msn < self.next_msn:
            return False
        return None

    def advance_part_limit(self) -> int:
        # bis 6.2.5.2: 3 / PTD parts when PTD < 1 s, else 3.
        if self.part_target < self.timescale:
            return -(-3 * self.timescale // self.part_target)
        return 3

    def block(self, msn: int, part: int | None) -> Block:
        """Can a request with _HLS_msn=msn[&_HLS_part=part] be answered?"""
        if self.ended:
            return Block.READY  # directives are ignored once ENDLIST is set
        last_complete = self.next_msn - 1
        if msn > last_complete + 2:
            return Block.TOO_FAR
        if part is None:
            return Block.READY if last_complete >= msn else Block.WAIT
        newest = self.last_part()
        if newest is not None and newest >= (msn, part):
            return Block.READY
        if part > self.advance_part_limit() + (newest[1] if newest and newest[0] == msn else 0):
            return Block.TOO_FAR
        return Block.WAIT

    # ------------------------------------------------------------- rendering
    def _fmt(self, ticks: int) -> str:
        return fmt_duration(ticks, self.timescale)

    def server_control(self) -> str:
        td = self.target_duration_s
        # PART-HOLD-BACK >= 3 x PTD (Apple 14.3); CAN-SKIP-UNTIL >= 6 x TD.
        return (f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={6 * td}.0,"
                f"PART-HOLD-BACK={self._fmt(3 * self.part_target)}")

    def render(self, *, skip: bool = False, reports: tuple[RenditionReport, ...] | list = ()) -> str:
        skip = skip and not self.ended
        all_segs = self.segments + ([self.open] if self.open and self.open.parts else [])
        end = sum(s.duration for s in all_segs)
        skipped = 0
        if skip:
            # Skip segments ending at least CAN-SKIP-UNTIL before the end of
            # the last complete segment (bis 6.2.5.1).
            boundary = 6 * self.target_duration_s * self.timescale
            complete_end = sum(s.duration for s in self.segments)
            pos = 0
            for seg in self.segments[:-1]:
                pos += seg.duration
                if complete_end - pos >= boundary:
                    skipped += 1
                else:
                    break
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{9 if skipped else 6}",
            f"#EXT-X-TARGETDURATION:{self.target_duration_s}",
            self.server_control(),
            f"#EXT-X-PART-INF:PART-TARGET={self._fmt(self.part_target)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
        ]
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        part_window = 3 * self.target_duration_s * self.timescale
        pos = 0
        current_map = None
        for i, seg in enumerate(all_segs):
            pos += seg.duration
            if i < skipped:
                continue
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.map_uri != current_map:
                lines.append(f'#EXT-X-MAP:URI="{seg.map_uri}"')
                current_map = seg.map_uri
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{fmt_pdt(seg.pdt_ms)}")
            if end - pos <= part_window:
                for p in seg.parts:
                    lines.append(f'#EXT-X-PART:DURATION={self._fmt(p.duration)},'
                                 f'URI="{p.uri}"' + (",INDEPENDENT=YES" if p.independent else ""))
            if seg.complete:
                lines.append(f"#EXTINF:{self._fmt(seg.duration)},")
                lines.append(seg.uri)
        map_hint = self.map_hint()
        if map_hint is not None:
            # Before the PART hint: readers that keep one hint keep the part's.
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="{map_hint}"')
        hint = self.preload_hint()
        if hint is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
        for r in reports:
            lines.append(f'#EXT-X-RENDITION-REPORT:URI="{r.uri}",LAST-MSN={r.last_msn},LAST-PART={r.last_part}')
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def _nat(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _pos(value) -> int:
    if _nat(value) == 0:
        raise ValueError("expected a positive integer, got 0")
    return value


def _str(value) -> str:
    # Names end up in the playlist text: refuse anything that could break a line or a quote.
    if not isinstance(value, str) or not INIT_RE.match(value):
        raise ValueError(f"bad init segment name {value!r}")
    return value
