"""fMP4 writer: box layout per ISO 14496-12 and decodability with FFmpeg (PyAV)."""
from __future__ import annotations

import io
import struct

import av
import pytest

import hls_media
from transcoder import codecs
from transcoder.fmp4 import (NON_SYNC_FLAGS, SYNC_FLAGS, VIDEO_TIMESCALE, Sample, Track, audio_track,
                             init_segment, media_fragment)
from transcoder.mp4box import box, full_box, iter_boxes


def children(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, tuple[int, int]]:
    return {k: (s, e) for k, s, e in iter_boxes(data, start, end)}


def find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int]:
    for i, kind in enumerate(path):
        s, end = children(data, start, end)[kind]
        start = s
    return start, end


@pytest.fixture(scope="module")
def media():
    vc, v = hls_media.h264(1.0, fps=30, gop=15)
    ac, a = hls_media.aac(1.0)
    vt = Track(1, "video", "h264", VIDEO_TIMESCALE, vc.record, vc.width, vc.height)
    at = audio_track(2, ac.record)
    return vt, v, at, a


def to_samples(frames, timescale, base_ms):
    out = []
    for i, f in enumerate(frames):
        dts = (f.dts - base_ms) * timescale // 1000
        nxt = (frames[i + 1].dts - base_ms) * timescale // 1000 if i + 1 < len(frames) else dts + 3000
        out.append(Sample(dts, nxt - dts, (f.pts - f.dts) * timescale // 1000, f.keyframe, f.data))
    return out


def test_box_header_is_size_then_type():
    assert box(b"free", b"abc") == b"\x00\x00\x00\x0bfreeabc"
    assert full_box(b"tfdt", 1, 0x020000, b"") == b"\x00\x00\x00\x0ctfdt\x01\x02\x00\x00"
    with pytest.raises(ValueError):
        box(b"toolong", b"")


def test_init_segment_layout(media):
    vt, _v, at, _a = media
    data = init_segment([vt, at])
    kinds = [k for k, _s, _e in iter_boxes(data)]
    assert kinds == [b"ftyp", b"moov"]  # ftyp first, nothing else (no samples)
    s, e = children(data)[b"ftyp"]
    assert data[s:s + 4] == b"iso6"
    moov = children(data)[b"moov"]
    moov_kids = [k for k, _s, _e in iter_boxes(data, *moov)]
    assert moov_kids == [b"mvhd", b"trak", b"trak", b"mvex"]  # mvex after the last trak
    mvex = children(data, *moov)[b"mvex"]
    trex_ids = [struct.unpack_from(">I", data, s + 4)[0] for k, s, _e in iter_boxes(data, *mvex)]
    assert trex_ids == [1, 2]
    # avcC inside avc1 is the record byte for byte.
    assert vt.record in data and b"avc1" in data and b"avcC" in data
    # esds carries the ASC in a DecoderSpecificInfo (tag 5).
    i = data.index(b"esds")
    assert bytes([0x05, len(at.record)]) + at.record in data[i:]
    # mdhd timescales: 90 kHz video, sample rate audio.
    assert at.timescale == 48000 and at.channels == 2


def test_fragment_trun_points_at_samples(media):
    vt, v, at, a = media
    vs = to_samples(list(v[:8]), VIDEO_TIMESCALE, v[0].dts)
    aus = to_samples(list(a[:5]), 48000, v[0].dts)
    frag = media_fragment(7, [(vt, vs), (at, aus)])
    (moof_s, moof_e), = [(s, e) for k, s, e in iter_boxes(frag) if k == b"moof"]
    assert struct.unpack_from(">I", frag, moof_s + 12)[0] == 7  # mfhd sequence_number
    trafs = [(s, e) for k, s, e in iter_boxes(frag, moof_s, moof_e) if k == b"traf"]
    for (s, e), samples in zip(trafs, (vs, aus)):
        kids = children(frag, s, e)
        ts, _ = kids[b"tfdt"]
        assert frag[ts] == 1 and struct.unpack_from(">Q", frag, ts + 4)[0] == samples[0].dts
        tr, _ = kids[b"trun"]
        version, count, offset = frag[tr], *struct.unpack_from(">Ii", frag, tr + 4)
        assert version == 1 and count == len(samples)
        pos = moof_s - 8 + offset  # default-base-is-moof
        for k in range(count):
            dur, size, flags, cto = struct.unpack_from(">IIIi", frag, tr + 12 + 16 * k)
            sm = samples[k]
            assert (dur, size, cto) == (sm.duration, len(sm.data), sm.cto)
            assert frag[pos:pos + size] == sm.data
            if s == trafs[0][0]:
                assert flags == (SYNC_FLAGS if sm.sync else NON_SYNC_FLAGS)
            pos += size


def test_negative_composition_offset_is_signed(media):
    vt, v, *_ = media
    frag = media_fragment(1, [(vt, [Sample(0, 3000, -3000, True, v[0].data)])])
    tr = frag.index(b"trun") + 4
    assert struct.unpack_from(">i", frag, tr + 12 + 12)[0] == -3000


def test_pyav_decodes_init_plus_fragments(media):
    vt, v, at, a = media
    base = v[0].dts
    vs, aus = to_samples(list(v), VIDEO_TIMESCALE, base), to_samples(list(a), 48000, base)
    out = init_segment([vt, at])
    for i in range(0, len(vs), 10):  # one fragment per 10 video frames, audio by time
        chunk = vs[i:i + 10]
        lo, hi = chunk[0].dts, chunk[-1].dts + chunk[-1].duration
        achunk = [s for s in aus if lo * 48000 <= s.dts * VIDEO_TIMESCALE < hi * 48000]
        out += media_fragment(i + 1, [(vt, chunk), (at, achunk)])
    with av.open(io.BytesIO(out)) as c:
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == len(v)
    expected = sorted((f.pts - base) * 90 for f in v)
    assert [f.pts for f in frames] == expected
    with av.open(io.BytesIO(out)) as c:
        assert sum(1 for _ in c.decode(audio=0)) == sum(
            1 for s in aus if s.dts * VIDEO_TIMESCALE < vs[-1].dts * 48000 + vs[-1].duration * 48000)


def test_codec_strings(media):
    vt, _v, at, _a = media
    assert codecs.avc_codec_string(vt.record) == "avc1.64000d"  # High, level 1.3 for 320x240
    assert codecs.aac_codec_string(at.record) == "mp4a.40.2"
    assert codecs.parse_asc(bytes.fromhex("1190")) == (2, 48000, 2)
    assert codecs.parse_asc(bytes.fromhex("1210")) == (2, 44100, 2)
    # HEVC Main, level 3.1 (93), compat flag bit 1/2 set, progressive-source constraint.
    hvcc = bytes([1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93]) + bytes(10)
    assert codecs.hevc_codec_string(hvcc) == "hvc1.1.6.L93.90"
    with pytest.raises(ValueError):
        codecs.avc_codec_string(b"\x00\x64")
