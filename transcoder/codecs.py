"""RFC 6381 codec strings for the multivariant playlist's CODECS attribute
(draft-pantos-hls-rfc8216bis §4.4.6.2; Apple authoring spec 9.1).

avc1.PPCCLL comes from the avcC record (ISO/IEC 14496-15 §5.3.3.1: profile,
constraint flags, level bytes 1..3); hvc1.* from the hvcC record (§8.3.3.1);
mp4a.40.<audioObjectType> from the AudioSpecificConfig (ISO/IEC 14496-3
§1.6.2.1). Small parsers, no dependency on the ingest.
"""
from __future__ import annotations

AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050,
                    16000, 12000, 11025, 8000, 7350)


def avc_codec_string(avcc: bytes) -> str:
    """avc1.PPCCLL from an AVCDecoderConfigurationRecord."""
    if len(avcc) < 4 or avcc[0] != 1:
        raise ValueError("not an avcC record (configurationVersion must be 1)")
    return f"avc1.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"


def hevc_codec_string(hvcc: bytes) -> str:
    """hvc1.<profile>.<compat reversed hex>.<tier><level>.<constraint bytes>."""
    if len(hvcc) < 13 or hvcc[0] != 1:
        raise ValueError("not an hvcC record (configurationVersion must be 1)")
    space = (hvcc[1] >> 6) & 3
    tier = "H" if hvcc[1] & 0x20 else "L"
    profile = hvcc[1] & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    # RFC 6381 / ISO 14496-15 Annex E: the 32 compatibility flags in reverse bit order.
    compat_rev = int(f"{compat:032b}"[::-1], 2)
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()  # trailing zero bytes are omitted
    prefix = ("", "A", "B", "C")[space]
    parts = [f"hvc1.{prefix}{profile}", f"{compat_rev:x}", f"{tier}{hvcc[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def parse_asc(asc: bytes) -> tuple[int, int, int]:
    """(audioObjectType, sample_rate, channel_configuration) of an ASC."""
    if len(asc) < 2:
        raise ValueError("AudioSpecificConfig too short")
    bits = int.from_bytes(asc[:8].ljust(8, b"\0"), "big")
    pos = 64

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        return (bits >> pos) & ((1 << n) - 1)

    aot = take(5)
    if aot == 31:  # escape: 32 + 6 more bits
        aot = 32 + take(6)
    index = take(4)
    if index == 15:
        rate = take(24)
    elif index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[index]
    else:
        raise ValueError(f"reserved AAC sampling frequency index {index}")
    channels = take(4)
    return aot, rate, channels


def aac_codec_string(asc: bytes) -> str:
    """mp4a.40.<audioObjectType>, e.g. mp4a.40.2 for AAC-LC."""
    aot, _rate, _channels = parse_asc(asc)
    return f"mp4a.40.{aot}"


def codec_string(codec: str, record: bytes) -> str:
    if codec == "h264":
        return avc_codec_string(record)
    if codec == "hevc":
        return hevc_codec_string(record)
    if codec == "aac":
        return aac_codec_string(record)
    raise ValueError(f"no codec string for {codec!r}")
