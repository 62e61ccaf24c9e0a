"""avcC and SPS parsing against libx264 output, plus the Exp-Golomb reader."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flv_media import avcc, encode_h264_raw
from ingest import avc, hevc
from ingest.bitreader import BitReader, remove_emulation_prevention
from ingest.errors import RemoteProtocolError


@pytest.mark.parametrize(
    "width, height, profile, profile_idc",
    [
        (320, 240, "baseline", 66),
        (1280, 720, "baseline", 66),
        (1280, 720, "main", 77),
        (1280, 720, "high", 100),
        (640, 360, "high", 100),  # 360 is not a multiple of 16: frame cropping
        (322, 242, "main", 77),  # odd-ish sizes crop on both axes
        (176, 144, None, 244),  # lossless: High 4:4:4 Predictive, with the extra SPS fields
    ],
)
def test_sps_from_libx264(width, height, profile, profile_idc):
    options = {"profile": profile, "preset": "veryfast"} if profile else {"qp": "0", "preset": "veryfast"}
    sps, pps, packets = encode_h264_raw(width, height, frames=1, options=options)
    record = avc.parse_avcc(avcc(sps, pps))
    info = avc.parse_sps(record.sps[0])
    assert (info.width, info.height) == (width, height)
    assert info.profile_idc == profile_idc == record.profile
    assert avc.picture_size(record) == (width, height)
    assert record.codec_string == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"
    assert record.length_size == 4 and record.pps == (pps,)


def test_codec_string_format():
    sps, pps, _ = encode_h264_raw(320, 240, frames=1, options={"profile": "high", "preset": "veryfast", "level": "3.1"})
    assert avc.parse_avcc(avcc(sps, pps)).codec_string == "avc1.64001f"


def test_interlaced_sps_with_scaling_matrix():
    # frame_mbs_only_flag = 0 and an explicit scaling matrix exercise the
    # field-height and scaling-list branches.
    sps, pps, _ = encode_h264_raw(
        320, 240, frames=2, options={"preset": "ultrafast", "profile": "high", "x264-params": "interlaced=1:cqm=jvt"}
    )
    info = avc.parse_sps(sps)
    assert (info.width, info.height) == (320, 240)


def test_avcc_errors():
    sps, pps, _ = encode_h264_raw(320, 240, frames=1)
    good = avcc(sps, pps)
    with pytest.raises(RemoteProtocolError, match="configurationVersion"):
        avc.parse_avcc(b"\x00" + good[1:])
    with pytest.raises(RemoteProtocolError, match="no SPS"):
        avc.parse_avcc(good[:5] + b"\xe0\x00")
    for cut in range(len(good) - len(pps)):
        with pytest.raises(RemoteProtocolError):
            avc.parse_avcc(good[:cut])
    # A broken SPS loses only the picture size, not the session.
    broken = avc.parse_avcc(avcc(sps[:5], pps))
    assert avc.picture_size(broken) == (0, 0)


def test_emulation_prevention_removed():
    assert remove_emulation_prevention(b"\x00\x00\x03\x01\x00\x00\x03\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x03"
    assert remove_emulation_prevention(b"\x00\x00\x03") == b"\x00\x00"
    assert remove_emulation_prevention(b"\x01\x02") == b"\x01\x02"


def test_exp_golomb():
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, se(4) = -2
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.ue(), r.ue(), r.ue(), r.ue(), r.se()] == [0, 1, 2, 3, -2]
    with pytest.raises(RemoteProtocolError):
        BitReader(b"\x00\x00\x00\x00\x00").ue()  # too many leading zeros
    with pytest.raises(RemoteProtocolError):
        BitReader(b"\x01").u(9)


@given(st.lists(st.integers(0, 2**20), max_size=20))
def test_exp_golomb_round_trip(values):
    bits = "".join(("0" * ((v + 1).bit_length() - 1)) + f"{v + 1:b}" for v in values)
    bits += "1" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    r = BitReader(data)
    assert [r.ue() for _ in values] == values


@given(st.binary(max_size=64))
def test_arbitrary_sps_bytes_never_crash(data):
    for fn in (avc.parse_sps, hevc.parse_sps_size, avc.parse_avcc, hevc.parse_hvcc):
        try:
            fn(b"\x67" + data if fn is avc.parse_sps else b"\x42\x01" + data if fn is hevc.parse_sps_size else data)
        except RemoteProtocolError:
            pass
