"""Where LL-HLS parts and segments are cut (sans-I/O).

Rules (shared/reference/ll-hls.md §2, §4; draft-pantos-hls-rfc8216bis
§4.4.4.9, Apple authoring spec 7.4):
- a part never lasts longer than the part target (its duration is the sum of
  the durations of the cut-deciding "main" track's samples: video if present,
  else audio);
- a segment ends at the first video keyframe once it has lasted the target
  duration, so every segment starts with a sync sample; audio-only streams
  cut by duration alone;
- when keyframes stop, a segment is forced to end before it would exceed the
  hard caps (duration and bytes), so the playlist's TARGETDURATION holds;
  this is logged, because the next segment will not start with a keyframe.

Samples arrive with their durations already known (the packager holds one
sample back per track). Audio samples of a video stream join whatever part
is open when they arrive.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transcoder.fmp4 import Sample

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PartReady:
    """A finished part: samples per track_id, in arrival order."""

    index: int  # part index inside its parent segment (0-based)
    duration: int  # main-track ticks
    independent: bool  # starts with a sync sample of the main track
    samples: dict[int, list[Sample]] = field(default_factory=dict)


@dataclass(slots=True)
class SegmentReady:
    """The parent segment of the preceding parts is complete."""

    duration: int  # main-track ticks, sum of its parts
    parts: int
    forced: bool  # cut by a cap, not at a keyframe


class Segmenter:
    def __init__(
        self,
        *,
        has_video: bool,
        # All durations in the main track's timescale.
        part_target: int,
        target_duration: int,
        # Hard cap so the playlist's TARGETDURATION is never exceeded even
        # when the publisher's GOP is longer than that (OBS "auto" = 8.3 s).
        max_segment_duration: int,
        # Hard cap on a segment's media bytes: bounds the memory of one open
        # segment against a hostile or broken encoder.
        max_segment_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not 0 < part_target <= target_duration <= max_segment_duration:
            raise ValueError("need 0 < part_target <= target_duration <= max_segment_duration")
        self.has_video = has_video
        self.part_target = part_target
        self.target_duration = target_duration
        self.max_segment_duration = max_segment_duration
        self.max_segment_bytes = max_segment_bytes
        self.forced_cuts = 0
        self._part: PartReady | None = None
        self._part_main = 0  # main samples in the open part
        self._seg_duration = 0
        self._seg_bytes = 0
        self._seg_parts = 0
        self._seg_main = 0  # main samples in the open segment

    def push(self, track_id: int, sample: Sample, *, main: bool) -> list[PartReady | SegmentReady]:
        events: list[PartReady | SegmentReady] = []
        if main:
            if self._seg_main:
                reached = self._seg_duration >= self.target_duration
                at_boundary = sample.sync if self.has_video else True
                over_cap = (self._seg_duration + sample.duration > self.max_segment_duration
                            or self._seg_bytes + len(sample.data) > self.max_segment_bytes)
                if reached and at_boundary:
                    self._close_segment(events, forced=False)
                elif over_cap:
                    self.forced_cuts += 1
                    log.warning("forced segment cut after %d ticks / %d bytes: no keyframe within the cap "
                                "(publisher keyframe interval too long?)", self._seg_duration, self._seg_bytes)
                    self._close_segment(events, forced=True)
            if self._part_main and self._part.duration + sample.duration > self.part_target:
                self._close_part(events)
        if self._part is None:
            self._part = PartReady(self._seg_parts, 0, False)
        part = self._part
        if main:
            if not self._part_main:
                part.independent = sample.sync
            self._part_main += 1
            self._seg_main += 1
            part.duration += sample.duration
            self._seg_duration += sample.duration
        part.samples.setdefault(track_id, []).append(sample)
        self._seg_bytes += len(sample.data)
        return events

    def flush(self) -> list[PartReady | SegmentReady]:
        """End of media (publisher gone or track change): close everything."""
        events: list[PartReady | SegmentReady] = []
        if self._part is not None or self._seg_parts:
            self._close_segment(events, forced=False)
        return events

    @property
    def open_duration(self) -> int:
        return self._seg_duration

    def _close_part(self, events: list) -> None:
        if self._part is not None and self._part.samples:
            events.append(self._part)
            self._seg_parts += 1
        self._part = None
        self._part_main = 0

    def _close_segment(self, events: list, *, forced: bool) -> None:
        self._close_part(events)
        if self._seg_parts:
            events.append(SegmentReady(self._seg_duration, self._seg_parts, forced))
        self._seg_duration = 0
        self._seg_bytes = 0
        self._seg_parts = 0
        self._seg_main = 0
