"""The multivariant playlist (master.m3u8): one EXT-X-STREAM-INF per
rendition, draft-pantos-hls-rfc8216bis §4.4.6.2 (BANDWIDTH, AVERAGE-BANDWIDTH,
CODECS, RESOLUTION, FRAME-RATE) and Apple authoring spec 9.1-9.15
(INDEPENDENT-SEGMENTS once, here). See shared/reference/ll-hls.md §3.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str  # e.g. "source/index.m3u8"
    bandwidth: int  # peak, bit/s
    average_bandwidth: int
    codecs: str  # "avc1.64001f,mp4a.40.2"
    width: int = 0
    height: int = 0
    frame_rate_milli: int = 0  # frames per 1000 s, e.g. 29970


def render_multivariant(variants: list[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: -v.bandwidth):
        attrs = [f"BANDWIDTH={max(1, v.bandwidth)}", f"AVERAGE-BANDWIDTH={max(1, v.average_bandwidth)}"]
        if v.codecs:
            attrs.append(f'CODECS="{v.codecs}"')
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        if v.frame_rate_milli:
            attrs.append(f"FRAME-RATE={v.frame_rate_milli // 1000}.{v.frame_rate_milli % 1000:03d}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"
