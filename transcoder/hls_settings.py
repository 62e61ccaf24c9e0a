"""Settings of the LL-HLS packager and origin (one value per limit, with why).

See shared/reference/ll-hls.md §2 (target duration, window), §4 (parts,
server control, blocking reload).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HlsSettings:
    # Nominal segment length: a segment ends at the first keyframe after it.
    # 2 s matches the 2 s keyframe interval we ask publishers to use.
    target_duration_ms: int = 2000
    # LL-HLS part target. 250 ms keeps latency near 1 s while staying well
    # above a LAN/CDN round trip (Apple 14.2 wants PTD >= 3 x P95 RTT).
    part_target_ms: int = 250
    # Segments listed in the live playlist (Apple 8.11 asks for >= 6); the
    # window also never drops below 3 x TARGETDURATION (bis 6.2.2).
    window_segments: int = 6
    # Files that left the window stay downloadable this long (bis 6.2.2:
    # availability duration; parts >= 3 x TD after their removal).
    delete_grace_s: int = 30
    # After a live ends for good (ENDLIST), its playlist and media stay this
    # long, then are deleted so rooms that never publish again do not fill
    # the disk (state.json stays: a later publish continues the MSNs).
    # bis 6.2.1: keep segments >= the playlist's duration after the stream
    # is removed (6 x 4 s here), and players finishing the last window, or
    # the file-grace deletes above, need about as long again.
    ended_keep_s: float = 60.0
    # Hard cap on a segment when keyframes stop or the GOP is too long (OBS
    # "auto" is 8.3 s). EXT-X-TARGETDURATION is derived from it, so the
    # playlist's TARGETDURATION is constant and never exceeded.
    max_segment_ms: int = 4000
    # Hard cap on a segment's bytes: bounds memory held for an open segment.
    max_segment_bytes: int = 32 * 1024 * 1024
    # Bounded hub queue of the packager's consumer.
    consumer_max_items: int = 2000
    consumer_max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 < self.part_target_ms <= self.target_duration_ms <= self.max_segment_ms:
            raise ValueError("need 0 < part_target_ms <= target_duration_ms <= max_segment_ms")
        if self.window_segments < 3:
            raise ValueError("window_segments must be >= 3")
        if self.ended_keep_s < 0:
            raise ValueError("ended_keep_s must be >= 0")

    @property
    def playlist_target_duration_s(self) -> int:
        """EXT-X-TARGETDURATION: whole seconds, rounded up from the cap."""
        return -(-self.max_segment_ms // 1000)

    @property
    def blocking_timeout_ms(self) -> int:
        """bis 6.2.5.2: a blocking reload unanswered after 3 x TD -> 503."""
        return 3 * self.playlist_target_duration_s * 1000
