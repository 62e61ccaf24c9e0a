"""AudioSpecificConfig parsing against FFmpeg's AAC encoder and hand-built configs."""
from __future__ import annotations

import av
import pytest

from ingest.aac import parse_asc
from ingest.errors import RemoteProtocolError


def _encoder_asc(rate: int, layout: str) -> bytes:
    c = av.CodecContext.create("aac", "w")
    c.sample_rate, c.layout, c.format = rate, layout, "fltp"
    c.flags |= av.codec.context.Flags.global_header
    c.open()
    return bytes(c.extradata)


@pytest.mark.parametrize(
    "rate, layout, channels",
    [(48000, "stereo", 2), (44100, "mono", 1), (22050, "stereo", 2), (8000, "mono", 1), (48000, "5.1", 6)],
)
def test_ffmpeg_aac_encoder_config(rate, layout, channels):
    asc = parse_asc(_encoder_asc(rate, layout))
    assert (asc.sample_rate, asc.channels, asc.object_type) == (rate, channels, 2)
    assert asc.samples_per_frame == 1024
    assert asc.codec_string == "mp4a.40.2"


def _bits(*fields: tuple[int, int]) -> bytes:
    s = "".join(f"{v:0{n}b}" for v, n in fields)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big")


def test_known_configs():
    lc48 = parse_asc(bytes.fromhex("1190"))
    assert (lc48.sample_rate, lc48.channels) == (48000, 2)
    lc441 = parse_asc(bytes.fromhex("1210"))
    assert (lc441.sample_rate, lc441.channels) == (44100, 2)
    # Explicit HE-AAC: AOT 5, core 24 kHz, SBR to 48 kHz, core AOT 2.
    he = parse_asc(_bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5), (0, 3)))
    assert (he.object_type, he.core_object_type, he.sample_rate, he.extension_sample_rate) == (5, 2, 24000, 48000)
    assert he.codec_string == "mp4a.40.5"
    # Escaped object type (31 -> 32 + 6 bits) and explicit 24-bit rate.
    esc = parse_asc(_bits((31, 5), (10, 6), (15, 4), (12345, 24), (1, 4)))
    assert (esc.object_type, esc.sample_rate, esc.channels) == (42, 12345, 1)
    # frameLengthFlag: 960-sample frames; channel configuration 7 is 8 channels.
    f960 = parse_asc(_bits((2, 5), (3, 4), (7, 4), (1, 1)))
    assert (f960.samples_per_frame, f960.channels) == (960, 8)


@pytest.mark.parametrize("data", [b"", b"\x11", _bits((2, 5), (13, 4), (2, 4)), _bits((0, 5), (3, 4), (2, 4)), b"\xf8"])
def test_bad_configs(data):
    with pytest.raises(RemoteProtocolError):
        parse_asc(data)
