"""MediaParser against real FLV tag bodies: FFmpeg's FLV muxer (legacy AVC/AAC,
Enhanced RTMP HEVC/AV1/Opus) read back by FFmpeg's demuxer, and bodies we wrap
ourselves around libx264 packets (multitrack, ModEx, 2-byte NAL lengths)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flv_media import annexb_nals, avcc, demux, encode_flv, encode_h264_raw, flv_tags, length_prefixed
from ingest import av1, hevc
from ingest.errors import RemoteProtocolError, UnsupportedCodec
from ingest.flv import MediaParser
from ingest.frames import AUDIO, VIDEO, CodecConfig, Frame


def parse(tags, parser=None, ts_offset=0):
    parser = parser or MediaParser()
    items = []
    for tag_type, ts, body in tags:
        if tag_type == 9:
            items += parser.video((ts + ts_offset) % 2**32, body)
        elif tag_type == 8:
            items += parser.audio((ts + ts_offset) % 2**32, body)
    return parser, items


def frames_of(items, kind):
    return [(f.data, f.dts, f.pts, f.keyframe) for f in items if isinstance(f, Frame) and f.kind == kind]


def packets_of(packets, kind):
    return [(p.data, p.dts, p.pts, p.keyframe) for p in packets if p.kind == kind]


@pytest.fixture(scope="module")
def h264_aac_flv():
    return encode_flv("libx264", "aac", frames=30)


@pytest.fixture(scope="module")
def hevc_opus_flv():
    return encode_flv("libx265", "libopus", width=352, height=288, frames=20, options={"x265-params": "log-level=none"})


@pytest.fixture(scope="module")
def h264_raw():
    return encode_h264_raw(320, 240, frames=12)


def test_h264_aac_equal_ffmpeg_demuxer(h264_aac_flv):
    parser, items = parse(flv_tags(h264_aac_flv))
    configs = [i for i in items if isinstance(i, CodecConfig)]
    assert [(c.kind, c.codec) for c in configs] == [(VIDEO, "h264"), (AUDIO, "aac")]
    video, audio = configs
    assert (video.width, video.height) == (320, 240)
    assert video.record[0] == 1 and video.record[4] & 3 == 3
    assert (audio.sample_rate, audio.channels) == (48000, 2)
    packets = demux(h264_aac_flv)
    assert frames_of(items, VIDEO) == packets_of(packets, VIDEO)
    assert frames_of(items, AUDIO) == packets_of(packets, AUDIO)
    assert len(frames_of(items, VIDEO)) == 30
    # libx264's default uses B-frames: the composition time must be honoured.
    assert any(pts != dts for _, dts, pts, _ in frames_of(items, VIDEO))
    assert parser.dropped_before_config == 0


def test_hevc_opus_enhanced_rtmp_equal_ffmpeg_demuxer(hevc_opus_flv):
    tags = flv_tags(hevc_opus_flv)
    # FFmpeg writes the E-RTMP header (IsExHeader + 'hvc1'), a colorInfo
    # Metadata packet and both CodedFrames and CodedFramesX.
    video_bodies = [b for t, _, b in tags if t == 9]
    assert video_bodies[0][0] & 0x80 and video_bodies[0][1:5] == b"hvc1"
    parser, items = parse(tags)
    configs = [i for i in items if isinstance(i, CodecConfig)]
    assert [(c.kind, c.codec) for c in configs] == [(VIDEO, "hevc"), (AUDIO, "opus")]
    assert (configs[0].width, configs[0].height) == (352, 288)
    assert configs[1].record.startswith(b"OpusHead") and configs[1].channels == 2
    assert configs[1].sample_rate == 48000
    record = hevc.parse_hvcc(configs[0].record)
    assert record.codec_string.startswith("hvc1.1.6.L")  # Main profile
    packets = demux(hevc_opus_flv)
    assert frames_of(items, VIDEO) == packets_of(packets, VIDEO)
    assert frames_of(items, AUDIO) == packets_of(packets, AUDIO)
    assert not any(f.codec == "h264" for f in items if isinstance(f, Frame))


def test_av1_enhanced_rtmp():
    data = encode_flv("libsvtav1", None, frames=6, options={"preset": "12", "svtav1-params": "svt-log-level=0"})
    parser, items = parse(flv_tags(data))
    assert isinstance(items[0], CodecConfig) and items[0].codec == "av1"
    assert items[0].record[0] == 0x81 and (items[0].width, items[0].height) == (320, 240)
    codec = av1.parse_av1c(items[0].record).codec_string
    assert codec.startswith("av01.0.") and codec.endswith("M.08")  # Main profile, 8-bit
    assert frames_of(items, VIDEO) == packets_of(demux(data), VIDEO)


def _legacy_avc(frame_type: int, packet_type: int, cts: int, body: bytes) -> bytes:
    return bytes([frame_type << 4 | 7, packet_type]) + cts.to_bytes(3, "big", signed=True) + body


def _wrap_raw(sps, pps, packets, length_size=4, base=1000):
    """Legacy FLV video bodies around libx264 packets; times in 1/30 s -> ms."""
    ms = lambda t: t * 100 // 3  # noqa: E731
    msgs = [(0, _legacy_avc(1, 0, 0, avcc(sps, pps, length_size)))]
    expected = []
    for data, pts, dts, key in packets:
        nals = annexb_nals(data)
        cts = ms(pts) - ms(dts)
        msgs.append((base + ms(dts), _legacy_avc(1 if key else 2, 1, cts, length_prefixed(nals, length_size))))
        expected.append((length_prefixed(nals, 4), base + ms(dts), base + ms(dts) + cts, key))
    return msgs, expected


@pytest.mark.parametrize("length_size", [4, 2])
def test_h264_self_wrapped_packets(h264_raw, length_size):
    sps, pps, packets = h264_raw
    msgs, expected = _wrap_raw(sps, pps, packets, length_size)
    parser = MediaParser()
    items = [i for ts, body in msgs for i in parser.video(ts, body)]
    assert isinstance(items[0], CodecConfig)
    # Frames are re-prefixed with 4-byte lengths, and the record says so.
    assert items[0].record == avcc(sps, pps, 4)
    assert (items[0].width, items[0].height) == (320, 240)
    assert frames_of(items, VIDEO) == expected


def _ex_video(frame_type: int, packet_type: int, fourcc: bytes, body: bytes) -> bytes:
    return bytes([0x80 | frame_type << 4 | packet_type]) + fourcc + body


def test_h264_in_enhanced_form_with_modex_and_frames_x(h264_raw):
    sps, pps, packets = h264_raw
    parser = MediaParser()
    items = parser.video(0, _ex_video(1, 0, b"avc1", avcc(sps, pps)))
    assert items[0].codec == "h264"
    data = length_prefixed(annexb_nals(packets[0][0]))
    # ModEx TimestampOffsetNano (u24 ns) before a CodedFrames packet.
    modex = bytes([0x80 | 1 << 4 | 7, 2, 0x01, 0x02, 0x03, 0 << 4 | 1]) + b"avc1" + (-20).to_bytes(3, "big", signed=True) + data
    assert parser.video(100, modex) == [Frame(VIDEO, "h264", 100, 80, True, data)]
    assert parser.video(133, _ex_video(2, 3, b"avc1", data)) == [Frame(VIDEO, "h264", 133, 133, False, data)]
    assert parser.video(134, _ex_video(1, 2, b"avc1", b"")) == []  # SequenceEnd
    assert parser.video(0, _ex_video(5, 4, b"avc1", b"\x02\x00\x09colorInfo\x03\x00\x00\x09")) == []


def test_multitrack_takes_track_zero(h264_raw):
    sps, pps, packets = h264_raw
    data = length_prefixed(annexb_nals(packets[0][0]))
    parser = MediaParser()
    # OneTrack, track 0: the sequence start.
    assert parser.video(0, bytes([0x80 | 1 << 4 | 6, 0 << 4 | 0]) + b"avc1" + b"\x00" + avcc(sps, pps))[0].codec == "h264"
    # ManyTracksManyCodecs: track 1 in an unknown codec is skipped, track 0 used.
    t1 = b"vp09" + b"\x01" + (4).to_bytes(3, "big") + b"junk"
    t0 = b"avc1" + b"\x00" + (3 + len(data)).to_bytes(3, "big") + (0).to_bytes(3, "big") + data
    msg = bytes([0x80 | 1 << 4 | 6, 2 << 4 | 1]) + t1 + t0
    assert parser.video(40, msg) == [Frame(VIDEO, "h264", 40, 40, True, data)]
    assert parser.ignored_tracks == 1
    # ManyTracks with one FourCC: only track 0 again.
    t0 = b"\x00" + (3 + len(data)).to_bytes(3, "big") + (0).to_bytes(3, "big") + data
    t2 = b"\x02" + (3 + len(data)).to_bytes(3, "big") + (0).to_bytes(3, "big") + data
    msg = bytes([0x80 | 2 << 4 | 6, 1 << 4 | 1]) + b"avc1" + t2 + t0
    assert parser.video(73, msg) == [Frame(VIDEO, "h264", 73, 73, False, data)]
    # A size that runs past the message end is the peer's error.
    with pytest.raises(RemoteProtocolError):
        parser.video(80, msg[:-1])


def test_enhanced_audio_mp4a_and_multitrack():
    parser = MediaParser()
    [cfg] = parser.audio(0, bytes([0x90]) + b"mp4a" + b"\x11\x90")
    assert (cfg.codec, cfg.sample_rate, cfg.channels) == ("aac", 48000, 2)
    assert parser.audio(21, bytes([0x91]) + b"mp4a" + b"\x01\x02") == [Frame(AUDIO, "aac", 21, 21, True, b"\x01\x02")]
    # Multitrack ManyTracks: track 0 and track 1.
    msg = bytes([0x95, 1 << 4 | 1]) + b"mp4a" + b"\x01\x00\x00\x01\xff" + b"\x00\x00\x00\x02\x03\x04"
    assert parser.audio(42, msg) == [Frame(AUDIO, "aac", 42, 42, True, b"\x03\x04")]
    assert parser.audio(50, bytes([0x94]) + b"mp4a" + b"\x00\x02") == []  # MultichannelConfig


def test_legacy_hevc_codec_id_12_is_hevc(hevc_opus_flv):
    hvcc = next(b for t, _, b in flv_tags(hevc_opus_flv) if t == 9)[5:]
    parser = MediaParser()
    [cfg] = parser.video(0, bytes([0x1C, 0, 0, 0, 0]) + hvcc)
    assert cfg.codec == "hevc" and (cfg.width, cfg.height) == (352, 288)


@pytest.mark.parametrize(
    "kind, payload, name",
    [
        ("video", _ex_video(1, 0, b"vp09", b"\x01\x00\x00\x00"), "vp09"),
        ("video", _ex_video(1, 1, b"zzzz", b""), "zzzz"),
        ("video", bytes([0x14, 0, 0]), "VP6"),
        ("video", bytes([0x12, 0, 0]), "H.263"),
        ("audio", bytes([0x2F, 0xFF, 0xFB]), "MP3"),
        ("audio", bytes([0x90]) + b"fLaC" + b"\x00", "FLAC"),
        ("audio", bytes([0xB6]) + b"spx", "Speex"),
    ],
)
def test_unsupported_codecs_are_named(kind, payload, name):
    parser = MediaParser()
    with pytest.raises(UnsupportedCodec, match=name):
        getattr(parser, kind)(0, payload)


def test_frames_before_config_are_dropped_and_counted(h264_aac_flv):
    tags = flv_tags(h264_aac_flv)
    video = [(t, ts, b) for t, ts, b in tags if t == 9]
    parser, items = parse(video[1:4] + video[:1] + video[1:4])
    assert parser.dropped_before_config == 3
    assert isinstance(items[0], CodecConfig) and len(items) == 4


def test_same_sequence_header_is_not_repeated(h264_aac_flv):
    tags = flv_tags(h264_aac_flv)
    seq = next(b for t, _, b in tags if t == 9)
    parser = MediaParser()
    assert len(parser.video(0, seq)) == 1
    assert parser.video(1000, seq) == []
    other = encode_flv("libx264", None, width=160, height=96, frames=1)
    [cfg] = parser.video(2000, next(b for t, _, b in flv_tags(other) if t == 9))
    assert (cfg.width, cfg.height) == (160, 96)


def test_negative_composition_time_is_signed():
    parser = MediaParser()
    parser.video(0, _legacy_avc(1, 0, 0, avcc(b"\x67\x42\xc0\x1e\xda\x05\x07\xec\x04\x40", b"\x68\xce\x3c\x80")))
    nal = length_prefixed([b"\x65\x88\x84"])
    [frame] = parser.video(1000, _legacy_avc(1, 1, -67, nal))
    assert (frame.dts, frame.pts) == (1000, 933)


@pytest.mark.parametrize("start", [2**24 - 500, 2**32 - 500])
def test_timestamps_monotonic_across_24_and_32_bit_points(h264_aac_flv, start):
    tags = flv_tags(h264_aac_flv)
    _, plain = parse(tags)
    _, shifted = parse(tags, ts_offset=start)
    for kind in (VIDEO, AUDIO):
        a, b = frames_of(plain, kind), frames_of(shifted, kind)
        assert [(d, dts + start, pts + start, k) for d, dts, pts, k in a] == b
        dts = [x[1] for x in b]
        assert dts == sorted(dts)
        assert dts[0] < start + 500 < dts[-1]  # crossed the 2**24 / 2**32 point


def test_truncated_payloads_raise_remote_protocol_error(h264_aac_flv, hevc_opus_flv):
    for data in (h264_aac_flv, hevc_opus_flv):
        tags = flv_tags(data)
        for tag_type, ts, body in tags[:12]:
            if tag_type not in (8, 9):
                continue
            for cut in sorted({0, 1, *range(0, len(body), max(1, len(body) // 40))}):
                parser, _ = parse(tags[:12])  # configs known, so frames get parsed
                fn = parser.video if tag_type == 9 else parser.audio
                try:
                    got = fn(ts, body[:cut])
                except RemoteProtocolError:
                    pass  # the only way a cut may fail
                else:
                    # A cut inside the tag's own header cannot be a frame: an
                    # empty video tag is an error, an empty audio tag the
                    # legacy silence marker (no media), a 1-byte one an error.
                    assert cut > 1 or (tag_type == 8 and cut == 0 and got == []), (tag_type, cut, got)


def test_truncated_sequence_headers_and_frames(h264_aac_flv):
    tags = flv_tags(h264_aac_flv)
    vseq = next(b for t, _, b in tags if t == 9)
    aseq = next(b for t, _, b in tags if t == 8)
    sps_len = int.from_bytes(vseq[11:13], "big")
    for cut in (1, 2, 5, 8, 12, 13 + sps_len - 1, 13 + sps_len + 2):
        with pytest.raises(RemoteProtocolError):
            MediaParser().video(0, vseq[:cut])
    for cut in (1, 2, 3):
        with pytest.raises(RemoteProtocolError):
            MediaParser().audio(0, aseq[:cut])
    parser, _ = parse(tags[:3])
    key = next(b for t, _, b in tags if t == 9 and b[1] == 1)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        parser.video(0, key[:-1])
    with pytest.raises(RemoteProtocolError):
        parser.video(0, b"")
    assert parser.audio(0, b"") == []  # legacy "silence"


_HEADERS = [b"\x17\x00", b"\x17\x01", b"\x27\x01", b"\x1c\x00", b"\x90hvc1", b"\x91hvc1", b"\x93av01",
            b"\x96\x00avc1\x00", b"\x96\x21", b"\x97", b"\xaf\x00", b"\xaf\x01", b"\x90mp4a", b"\x91Opus",
            b"\x95\x10mp4a", b"\x97\x00"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["video", "audio"]), head=st.sampled_from([b""] + _HEADERS), tail=st.binary(max_size=80))
def test_arbitrary_bytes_give_items_or_remote_protocol_error(kind, head, tail):
    parser = MediaParser()
    # Known configs first, so arbitrary frame bodies reach the frame paths too.
    parser.video(0, _legacy_avc(1, 0, 0, avcc(b"\x67\x42\xc0\x1e\xda\x05\x07\xec\x04\x40", b"\x68\xce\x3c\x80")))
    parser.audio(0, b"\xaf\x00\x11\x90")
    try:
        out = getattr(parser, kind)(123, head + tail)
    except RemoteProtocolError:
        return
    assert isinstance(out, list)
    assert all(isinstance(i, (CodecConfig, Frame)) for i in out)
