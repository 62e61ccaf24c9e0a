"""The ABR ladder: which renditions to encode below the source.

Configured as "name:height:video_kbps" items, comma separated, e.g.
"720p:720:2800,480p:480:1200". Renditions at or above the source height are
skipped, so a 480p source gets only 360p.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
RESERVED_NAMES = {"source"}


@dataclass(frozen=True, slots=True)
class Rendition:
    name: str
    height: int
    video_kbps: int

    def width_for(self, src_width: int, src_height: int) -> int:
        # Keep the source aspect ratio; encoders need even dimensions.
        width = round(src_width * self.height / src_height)
        return width + (width & 1)


def parse_ladder(text: str) -> list[Rendition]:
    """Parse the config string; raises ValueError naming the bad item."""
    ladder: list[Rendition] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        if len(fields) != 3:
            raise ValueError(f"ladder item {item!r}: expected name:height:kbps")
        name, height, kbps = fields
        if not _NAME.match(name) or name in RESERVED_NAMES:
            raise ValueError(f"ladder item {item!r}: bad rendition name {name!r}")
        if not height.isdigit() or not 90 <= int(height) <= 4320 or int(height) % 2:
            raise ValueError(f"ladder item {item!r}: height must be an even number 90..4320")
        if not kbps.isdigit() or not 50 <= int(kbps) <= 100_000:
            raise ValueError(f"ladder item {item!r}: kbps must be 50..100000")
        if any(r.name == name for r in ladder):
            raise ValueError(f"ladder item {item!r}: duplicate name {name!r}")
        ladder.append(Rendition(name, int(height), int(kbps)))
    return sorted(ladder, key=lambda r: -r.height)


def renditions_for(ladder: list[Rendition], src_height: int) -> list[Rendition]:
    """The renditions worth encoding for a source of this height."""
    return [r for r in ladder if r.height < src_height]
