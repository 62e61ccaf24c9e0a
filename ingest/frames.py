"""Codec-level media items that flow from the ingest, through a StreamHub, to
the packager, the transcoders and the thumbnailer.

Time is integer milliseconds (the RTMP timescale), already unwrapped to 64
bits by the ingest; consumers convert to their own timescale in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VIDEO = "video"
AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """Decoder configuration of one track, sent before its first frame and
    again whenever the encoder changes it (a new sequence header)."""

    kind: str  # VIDEO or AUDIO
    codec: str  # "h264", "hevc", "av1", "aac", "opus"
    # avcC / hvcC / av1C record, AudioSpecificConfig, or OpusHead, as sent.
    record: bytes
    width: int = 0  # from the SPS when the codec is parsed, else 0
    height: int = 0
    sample_rate: int = 0  # audio only
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit (video) or one audio frame."""

    kind: str
    codec: str
    dts: int  # ms, unwrapped, monotonic per track
    pts: int  # ms, dts + composition time offset
    keyframe: bool
    # Video: NAL units with 4-byte big-endian length prefixes, as FLV carries
    # them (AV1: the OBUs). Audio: one raw AAC frame (no ADTS) or Opus packet.
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A publisher started (or took over) a live; frames from it follow."""

    live_id: int
    session_id: int  # grows with every publish of this live
    metadata: dict = field(default_factory=dict)  # onMetaData, parsed


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The publisher of `session_id` is gone (unpublish, disconnect, drop)."""

    live_id: int
    session_id: int
    reason: str


HubItem = CodecConfig | Frame | StreamStart | StreamEnd
