"""HEVC decoder configuration: HEVCDecoderConfigurationRecord (ISO/IEC
14496-15 §8.3.3.1, `hvcC`, the Enhanced RTMP `hvc1` SequenceStart body), the
picture size from its SPS (ITU-T H.265 §7.3.2.2) and the codec string
(`hvc1.<profile>.<compat>.<tier><level>.<constraints>`, 14496-15 Annex E.3).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .bitreader import BitReader, remove_emulation_prevention
from .errors import RemoteProtocolError

log = logging.getLogger(__name__)

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
_HVCC_HEADER = 23  # bytes before numOfArrays + 1


@dataclass(frozen=True, slots=True)
class HEVCDecoderConfigurationRecord:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int  # general_profile_compatibility_flags, 32 bits
    constraint_flags: bytes  # general_constraint_indicator_flags, 6 bytes
    level_idc: int
    chroma_format: int
    length_size: int
    nal_units: dict[int, tuple[bytes, ...]]  # NAL unit type -> units

    @property
    def codec_string(self) -> str:
        space = "" if self.profile_space == 0 else "ABC"[self.profile_space - 1]
        # Annex E.3: compatibility flags in reverse bit order, hex, no leading zeros.
        compat = int(f"{self.compatibility_flags:032b}"[::-1], 2)
        parts = [f"hvc1.{space}{self.profile_idc}", f"{compat:X}", f"{'LH'[self.tier]}{self.level_idc}"]
        constraints = self.constraint_flags.rstrip(b"\x00")  # trailing zero bytes omitted
        parts += [f"{b:X}" for b in constraints]
        return ".".join(parts)


def parse_hvcc(record: bytes) -> HEVCDecoderConfigurationRecord:
    if len(record) < _HVCC_HEADER:
        raise RemoteProtocolError(f"HEVC sequence header too short ({len(record)} bytes)")
    if record[0] != 1:
        raise RemoteProtocolError(f"hvcC configurationVersion {record[0]} is not 1")
    nal_units: dict[int, list[bytes]] = {}
    pos = _HVCC_HEADER
    for _ in range(record[22]):  # numOfArrays
        if pos + 3 > len(record):
            raise RemoteProtocolError("hvcC truncated in an array header")
        nal_type = record[pos] & 0x3F
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise RemoteProtocolError("hvcC truncated in a NAL unit length")
            n = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if n == 0 or pos + n > len(record):
                raise RemoteProtocolError(f"hvcC NAL unit of {n} bytes does not fit")
            nal_units.setdefault(nal_type, []).append(record[pos : pos + n])
            pos += n
    if NAL_SPS not in nal_units:
        raise RemoteProtocolError("hvcC carries no SPS")
    return HEVCDecoderConfigurationRecord(
        profile_space=record[1] >> 6,
        tier=(record[1] >> 5) & 1,
        profile_idc=record[1] & 0x1F,
        compatibility_flags=int.from_bytes(record[2:6], "big"),
        constraint_flags=bytes(record[6:12]),
        level_idc=record[12],
        chroma_format=record[16] & 0x03,
        length_size=(record[21] & 0x03) + 1,
        nal_units={k: tuple(v) for k, v in nal_units.items()},
    )


def parse_sps_size(nal: bytes) -> tuple[int, int]:
    """Cropped (conformance window) width and height of an HEVC SPS NAL unit."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != NAL_SPS:
        raise RemoteProtocolError("not an HEVC SPS NAL unit")
    r = BitReader(remove_emulation_prevention(nal[2:]), what="HEVC SPS")
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(r, max_sub_layers_minus1)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise RemoteProtocolError(f"HEVC SPS chroma_format_idc {chroma_format_idc}")
    separate_colour_plane = chroma_format_idc == 3 and r.flag()
    width = r.ue()
    height = r.ue()
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # H.265 Table 6-1: offsets are in chroma sample units.
        chroma = 0 if separate_colour_plane else chroma_format_idc
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise RemoteProtocolError(f"HEVC SPS gives a {width}x{height} picture")
    return width, height


def _skip_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> None:
    # H.265 §7.3.3 with profilePresentFlag = 1.
    r.skip(88)  # general profile space/tier/idc, compat flags, constraint flags
    r.skip(8)  # general_level_idc
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)


def picture_size(cfg: HEVCDecoderConfigurationRecord) -> tuple[int, int]:
    """Width and height from the first SPS; (0, 0) if it cannot be parsed."""
    try:
        return parse_sps_size(cfg.nal_units[NAL_SPS][0])
    except RemoteProtocolError as exc:
        log.warning("cannot read picture size from the HEVC SPS: %s", exc)
        return 0, 0
