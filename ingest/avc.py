"""H.264 decoder configuration: AVCDecoderConfigurationRecord (ISO/IEC 14496-15
§5.3.3.1, the FLV AVC sequence header body, `avcC`) and the few sequence
parameter set fields (ITU-T H.264 §7.3.2.1.1) we need: profile, level and
the cropped picture size. Also the RFC 6381 codec string (`avc1.PPCCLL`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .bitreader import BitReader, remove_emulation_prevention
from .errors import RemoteProtocolError

log = logging.getLogger(__name__)

# Profiles whose SPS carries chroma_format_idc, bit depths and scaling lists
# (H.264 §7.3.2.1.1, the `if( profile_idc == 100 || ...` list).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# Guards against a hostile SPS: the spec allows at most 255 entries.
_MAX_REF_FRAMES_IN_POC_CYCLE = 255


@dataclass(frozen=True, slots=True)
class SPSInfo:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class AVCDecoderConfigurationRecord:
    profile: int  # AVCProfileIndication
    compatibility: int  # profile_compatibility
    level: int  # AVCLevelIndication
    length_size: int  # lengthSizeMinusOne + 1: bytes of each NAL length prefix
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        """RFC 6381 §3.3: avc1 + profile, constraint byte, level in hex."""
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"


def parse_avcc(record: bytes) -> AVCDecoderConfigurationRecord:
    """Parse an avcC. The optional High-profile tail (chroma format, bit depths,
    SPS extensions) is often omitted or wrong in the wild, so it is ignored."""
    if len(record) < 7:
        raise RemoteProtocolError(f"AVC sequence header too short ({len(record)} bytes)")
    if record[0] != 1:
        raise RemoteProtocolError(f"avcC configurationVersion {record[0]} is not 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        # 14496-15 allows 1, 2 and 4 only.
        raise RemoteProtocolError("avcC lengthSizeMinusOne = 2 is not allowed")
    pos = 5
    sps, pos = _read_nal_list(record, pos, record[pos] & 0x1F, "SPS")
    if pos >= len(record):
        raise RemoteProtocolError("avcC truncated before numOfPictureParameterSets")
    pps, pos = _read_nal_list(record, pos, record[pos], "PPS")
    if not sps:
        raise RemoteProtocolError("avcC carries no SPS")
    return AVCDecoderConfigurationRecord(
        profile=record[1],
        compatibility=record[2],
        level=record[3],
        length_size=length_size,
        sps=tuple(sps),
        pps=tuple(pps),
    )


def _read_nal_list(record: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    pos += 1  # the count byte
    out = []
    for _ in range(count):
        if pos + 2 > len(record):
            raise RemoteProtocolError(f"avcC truncated in {what} length")
        n = int.from_bytes(record[pos : pos + 2], "big")
        pos += 2
        if n == 0 or pos + n > len(record):
            raise RemoteProtocolError(f"avcC {what} of {n} bytes does not fit")
        out.append(record[pos : pos + n])
        pos += n
    return out, pos


def parse_sps(nal: bytes) -> SPSInfo:
    """Parse an H.264 SPS NAL unit (with its 1-byte NAL header)."""
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        raise RemoteProtocolError("not an H.264 SPS NAL unit")
    r = BitReader(remove_emulation_prevention(nal[1:]), what="H.264 SPS")
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1  # inferred for profiles without the field
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise RemoteProtocolError(f"H.264 SPS chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        n = r.ue()
        if n > _MAX_REF_FRAMES_IN_POC_CYCLE:
            raise RemoteProtocolError("H.264 SPS num_ref_frames_in_pic_order_cnt_cycle too large")
        for _ in range(n):
            r.se()
    elif poc_type != 2:
        raise RemoteProtocolError(f"H.264 SPS pic_order_cnt_type {poc_type}")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    # H.264 §7.4.2.1.1, equations 7-19..7-22: crop offsets are in chroma units.
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    field_factor = 1 if frame_mbs_only else 2
    if chroma_array_type == 0:
        crop_x, crop_y = 1, field_factor
    else:
        sub_w = 1 if chroma_format_idc == 3 else 2
        sub_h = 2 if chroma_format_idc == 1 else 1
        crop_x, crop_y = sub_w, sub_h * field_factor
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = field_factor * height_map_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise RemoteProtocolError(f"H.264 SPS gives a {width}x{height} picture")
    return SPSInfo(profile_idc, constraint_flags, level_idc, chroma_format_idc, width, height)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    # H.264 §7.3.2.1.1.1: delta-coded list, ends early when next_scale hits 0.
    last = next_ = 8
    for _ in range(size):
        if next_ != 0:
            next_ = (last + r.se() + 256) % 256
        last = next_ if next_ != 0 else last


def picture_size(cfg: AVCDecoderConfigurationRecord) -> tuple[int, int]:
    """Width and height from the first SPS; (0, 0) if it cannot be parsed.

    A decoder may still play a stream whose SPS uses syntax we do not follow,
    so a parse failure here only loses the size, not the session."""
    try:
        info = parse_sps(cfg.sps[0])
    except RemoteProtocolError as exc:
        log.warning("cannot read picture size from the H.264 SPS: %s", exc)
        return 0, 0
    return info.width, info.height
