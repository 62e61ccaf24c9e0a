"""Fragmented MP4 (CMAF) writer: the init segment (EXT-X-MAP target) and media
fragments (one moof+mdat per LL-HLS part).

Spec: ISO/IEC 14496-12 §8 (moov, mvex/trex, moof/traf/tfhd/tfdt/trun),
ISO/IEC 14496-15 (avc1/avcC, hvc1/hvcC), ISO/IEC 14496-1 §7.2.6 (esds),
draft-pantos-hls-rfc8216bis §3.1.2 (fMP4 rules for HLS). See
shared/reference/fmp4.md §2-§3.
"""
from __future__ import annotations

from dataclasses import dataclass

from transcoder.codecs import parse_asc
from transcoder.mp4box import box, full_box, i16, u16, u32, u64, u8

VIDEO_TIMESCALE = 90_000  # exact for ms timestamps (x90) and 29.97 fps

# sample_flags (14496-12 §8.8.3.1): depends_on=2 (I), or depends_on=1 + is_non_sync.
SYNC_FLAGS = 0x02000000
NON_SYNC_FLAGS = 0x01010000

# trun flags: data_offset, duration, size, flags, composition time offset.
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000

_UNITY_MATRIX = b"".join(u32(v) for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))


@dataclass(frozen=True, slots=True)
class Track:
    """One track of the init segment; timescale is 90 kHz for video and the
    sample rate for audio (one AAC frame = 1024 ticks)."""

    track_id: int
    kind: str  # "video" | "audio"
    codec: str  # "h264" | "hevc" | "aac"
    timescale: int
    record: bytes  # avcC / hvcC / AudioSpecificConfig
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample in its track's timescale. cto = pts - dts (signed)."""

    dts: int
    duration: int
    cto: int
    sync: bool
    data: bytes


# ---------------------------------------------------------------- init segment

def _ftyp() -> bytes:
    # iso6 is what bis §3.1.2 asks for; cmfc marks a CMAF header.
    return box(b"ftyp", b"iso6", u32(0), b"iso6", b"cmfc", b"mp41")


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd", 0, 0,
        u32(0), u32(0), u32(1000), u32(0),  # times, timescale, duration 0
        u32(0x00010000), u16(0x0100), b"\0" * 10,  # rate 1.0, volume 1.0
        _UNITY_MATRIX, b"\0" * 24, u32(next_track_id),
    )


def _tkhd(t: Track) -> bytes:
    audio = t.kind == "audio"
    return full_box(
        b"tkhd", 0, 0x3,  # enabled | in_movie
        u32(0), u32(0), u32(t.track_id), u32(0), u32(0), b"\0" * 8,
        i16(0), i16(1 if audio else 0), u16(0x0100 if audio else 0), u16(0),
        _UNITY_MATRIX, u32(t.width << 16), u32(t.height << 16),
    )


def _mdhd(t: Track) -> bytes:
    # language 'und' packed as three 5-bit letters.
    return full_box(b"mdhd", 0, 0, u32(0), u32(0), u32(t.timescale), u32(0), u16(0x55C4), u16(0))


def _hdlr(t: Track) -> bytes:
    handler, name = (b"vide", b"VideoHandler\0") if t.kind == "video" else (b"soun", b"SoundHandler\0")
    return full_box(b"hdlr", 0, 0, u32(0), handler, b"\0" * 12, name)


def _avc1_or_hvc1(t: Track) -> bytes:
    entry, child = (b"avc1", b"avcC") if t.codec == "h264" else (b"hvc1", b"hvcC")
    return box(
        entry,
        b"\0" * 6, u16(1),  # reserved, data_reference_index
        u16(0), u16(0), b"\0" * 12,  # pre_defined, reserved, pre_defined
        u16(t.width), u16(t.height),
        u32(0x00480000), u32(0x00480000), u32(0),  # 72 dpi, reserved
        u16(1), b"\0" * 32, u16(0x0018), i16(-1),  # frame_count, compressorname, depth
        box(child, t.record),
    )


def _descriptor(tag: int, body: bytes) -> bytes:
    # 14496-1 §8.3.3: length in 7-bit groups, 0x80 = more bytes follow.
    n = len(body)
    length = [n & 0x7F]
    n >>= 7
    while n:
        length.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return u8(tag) + bytes(length) + body


def _esds(t: Track) -> bytes:
    decoder_specific = _descriptor(0x05, t.record)
    decoder_config = _descriptor(
        0x04,
        u8(0x40) + u8(0x15)  # MPEG-4 Audio; streamType 5 (audio) << 2 | 1
        + b"\0\0\0" + u32(0) + u32(0)  # bufferSizeDB, maxBitrate, avgBitrate
        + decoder_specific,
    )
    es = _descriptor(0x03, u16(t.track_id) + u8(0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def _mp4a(t: Track) -> bytes:
    return box(
        b"mp4a",
        b"\0" * 6, u16(1), b"\0" * 8,
        u16(t.channels), u16(16), u16(0), u16(0),
        u32((t.sample_rate & 0xFFFF) << 16),  # 16.16; >65535 Hz does not fit
        _esds(t),
    )


def _stbl(t: Track) -> bytes:
    entry = _mp4a(t) if t.kind == "audio" else _avc1_or_hvc1(t)
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, u32(1), entry),
        full_box(b"stts", 0, 0, u32(0)),
        full_box(b"stsc", 0, 0, u32(0)),
        full_box(b"stsz", 0, 0, u32(0), u32(0)),
        full_box(b"stco", 0, 0, u32(0)),
    )


def _trak(t: Track) -> bytes:
    media_header = full_box(b"vmhd", 0, 1, u16(0), b"\0" * 6) if t.kind == "video" else full_box(b"smhd", 0, 0, i16(0), u16(0))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, u32(1), full_box(b"url ", 0, 1)))
    minf = box(b"minf", media_header, dinf, _stbl(t))
    return box(b"trak", _tkhd(t), box(b"mdia", _mdhd(t), _hdlr(t), minf))


def audio_track(track_id: int, record: bytes, sample_rate: int = 0, channels: int = 0) -> Track:
    """An AAC track; rate and channels come from the ASC when not given."""
    _aot, asc_rate, asc_channels = parse_asc(record)
    rate = sample_rate or asc_rate
    ch = channels or (8 if asc_channels == 7 else asc_channels) or 2
    return Track(track_id, "audio", "aac", rate, record, sample_rate=rate, channels=ch)


def init_segment(tracks: list[Track]) -> bytes:
    """ftyp + moov with empty sample tables and mvex/trex (bis §3.1.2)."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    trex = [full_box(b"trex", 0, 0, u32(t.track_id), u32(1), u32(0), u32(0), u32(0)) for t in tracks]
    moov = box(
        b"moov",
        _mvhd(max(t.track_id for t in tracks) + 1),
        *[_trak(t) for t in tracks],
        box(b"mvex", *trex),
    )
    return _ftyp() + moov


# ------------------------------------------------------------- media fragment

def _traf(t: Track, samples: list[Sample], data_offset: int) -> bytes:
    entries = b"".join(
        u32(s.duration) + u32(len(s.data))
        + u32(SYNC_FLAGS if (s.sync or t.kind == "audio") else NON_SYNC_FLAGS)
        + u32(s.cto & 0xFFFFFFFF)  # version 1: signed
        for s in samples
    )
    return box(
        b"traf",
        full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, u32(t.track_id)),
        full_box(b"tfdt", 1, 0, u64(samples[0].dts)),
        full_box(b"trun", 1, _TRUN_FLAGS, u32(len(samples)), u32(data_offset), entries),
    )


def _moof(sequence_number: int, runs: list[tuple[Track, list[Sample]]], offsets: list[int]) -> bytes:
    return box(
        b"moof",
        full_box(b"mfhd", 0, 0, u32(sequence_number)),
        *[_traf(t, s, off) for (t, s), off in zip(runs, offsets)],
    )


def media_fragment(sequence_number: int, runs: list[tuple[Track, list[Sample]]]) -> bytes:
    """One moof+mdat: a traf per track with samples, mdat in traf order.

    With default-base-is-moof, data_offset counts from the first byte of the
    moof; the moof size does not depend on the offsets' values, so it is
    built once to measure and once for real.
    """
    runs = [(t, s) for t, s in runs if s]
    if not runs:
        raise ValueError("a fragment needs at least one sample")
    moof_size = len(_moof(sequence_number, runs, [0] * len(runs)))
    offsets, pos = [], moof_size + 8
    for _t, samples in runs:
        offsets.append(pos)
        pos += sum(len(s.data) for s in samples)
    payload = b"".join(s.data for _t, samples in runs for s in samples)
    return _moof(sequence_number, runs, offsets) + box(b"mdat", payload)
