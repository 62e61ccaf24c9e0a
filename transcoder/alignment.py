"""Decode-time alignment of transcoded renditions with the source.

The packager cuts a segment at a video keyframe and writes that keyframe's
*decode* time as the segment's `tfdt` (ISO/IEC 14496-12 §8.8.12) and the
base of its EXT-X-PROGRAM-DATE-TIME. The worker keeps every source picture's
presentation time (pts) exactly, but not its decode time: a source with
B-frames (OBS's x264 with bframes=2) has a reorder delay, its keyframes have
dts = pts - delay, while a rendition encoded without B-frames has dts = pts.
Left alone, every rendition's segments would start one or two frame
durations after the source's, and their PDTs would disagree by as much
(rfc8216bis §6.2.4 wants the same media time and date in every variant).

So each rendition's timestamps are shifted, per GOP, by the difference
between its keyframe's dts and the source keyframe's dts for the same pts:
the keyframes then carry the source's dts, the presentation times stay
untouched (the composition offset absorbs the shift), and decode order is
unchanged. Sans-I/O: fed the source keyframes going in and the encoded
pictures coming out.
"""
from __future__ import annotations

import collections


class DecodeTimeAligner:
    def __init__(self, tracks: int,
                 # Source keyframes remembered (pts -> dts) until the worker
                 # returns them: the worker is at most `max_in_flight` inputs
                 # (~2 s) behind, i.e. a few keyframes; 64 is ample and bounded.
                 max_keyframes: int = 64,
                 # A dts step back smaller than this is a reorder-delay change
                 # (a frame or two) and is smoothed; a larger one is a new
                 # timeline (the next publish session restarts its clock) and
                 # passes through. No encoder reorders by a whole second.
                 max_reorder_ms: int = 1000) -> None:
        self.max_keyframes = max_keyframes
        self.max_reorder_ms = max_reorder_ms
        self._source: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._shift = [0] * tracks
        self._last_dts: list[int | None] = [None] * tracks

    def source_keyframe(self, dts: int, pts: int) -> None:
        self._source[pts] = dts
        while len(self._source) > self.max_keyframes:
            self._source.popitem(last=False)

    def output(self, track: int, dts: int, pts: int, keyframe: bool) -> int:
        """The aligned dts of one encoded picture of rendition `track`."""
        if keyframe and (src_dts := self._source.get(pts)) is not None:
            self._shift[track] = dts - src_dts
        aligned = dts - self._shift[track]
        last = self._last_dts[track]
        if last is not None and last - self.max_reorder_ms < aligned <= last:
            # The source's reorder delay grew by a frame or more between two
            # GOPs: keep dts increasing (the packager drops a frame that does
            # not), at the price of this one keyframe being a few ms late.
            aligned = last + 1
        self._last_dts[track] = aligned
        return aligned
