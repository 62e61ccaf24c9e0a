"""AV1 decoder configuration: AV1CodecConfigurationRecord (`av1C`, AV1 in
ISOBMFF §2.3, the Enhanced RTMP `av01` SequenceStart body) and the picture
size from the sequence header OBU in its configOBUs (AV1 spec §5.5.1), plus
the codec string `av01.P.LLT.DD` (AV1 in ISOBMFF Annex A).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .bitreader import BitReader
from .errors import RemoteProtocolError

log = logging.getLogger(__name__)

OBU_SEQUENCE_HEADER = 1
_MAX_LEB128_BYTES = 8  # AV1 spec §4.10.5


@dataclass(frozen=True, slots=True)
class AV1CodecConfigurationRecord:
    seq_profile: int
    seq_level_idx_0: int
    seq_tier_0: int
    bit_depth: int
    monochrome: bool
    config_obus: bytes

    @property
    def codec_string(self) -> str:
        return f"av01.{self.seq_profile}.{self.seq_level_idx_0:02d}{'MH'[self.seq_tier_0]}.{self.bit_depth:02d}"


def parse_av1c(record: bytes) -> AV1CodecConfigurationRecord:
    if len(record) < 4 or record[0] != 0x81:  # marker 1, version 1
        raise RemoteProtocolError("AV1 sequence start is not an av1C record")
    high_bitdepth, twelve_bit = record[2] >> 6 & 1, record[2] >> 5 & 1
    return AV1CodecConfigurationRecord(
        seq_profile=record[1] >> 5,
        seq_level_idx_0=record[1] & 0x1F,
        seq_tier_0=record[2] >> 7,
        bit_depth=12 if twelve_bit else 10 if high_bitdepth else 8,
        monochrome=bool(record[2] >> 4 & 1),
        config_obus=bytes(record[4:]),
    )


def _sequence_header(obus: bytes) -> bytes:
    pos = 0
    while pos < len(obus):
        header = obus[pos]
        obu_type, has_ext, has_size = header >> 3 & 0x0F, header >> 2 & 1, header >> 1 & 1
        pos += 1 + has_ext
        size = len(obus) - pos
        if has_size:
            size = shift = 0
            for i in range(_MAX_LEB128_BYTES + 1):
                if i == _MAX_LEB128_BYTES or pos >= len(obus):
                    raise RemoteProtocolError("bad OBU size in av1C")
                b = obus[pos]
                pos += 1
                size |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        if pos + size > len(obus):
            raise RemoteProtocolError("truncated OBU in av1C")
        if obu_type == OBU_SEQUENCE_HEADER:
            return obus[pos : pos + size]
        pos += size
    raise RemoteProtocolError("av1C carries no sequence header OBU")


def _uvlc(r: BitReader) -> int:
    zeros = 0
    while not r.flag():
        zeros += 1
        if zeros >= 32:
            raise RemoteProtocolError("invalid uvlc() in AV1 sequence header")
    return r.u(zeros) + (1 << zeros) - 1


def parse_sequence_header_size(seq: bytes) -> tuple[int, int]:
    """max_frame_width/height from a sequence_header_obu payload (§5.5.1)."""
    r = BitReader(seq, what="AV1 sequence header")
    r.u(3)  # seq_profile
    r.u(1)  # still_picture
    if r.flag():  # reduced_still_picture_header
        r.u(5)  # seq_level_idx[0]
    else:
        decoder_model_info = False
        buffer_delay_bits = 0
        if r.flag():  # timing_info_present_flag
            r.skip(64)  # num_units_in_display_tick, time_scale
            if r.flag():  # equal_picture_interval
                _uvlc(r)
            decoder_model_info = r.flag()
            if decoder_model_info:
                buffer_delay_bits = r.u(5) + 1
                r.skip(32 + 5 + 5)
        initial_display_delay = r.flag()
        for _ in range(r.u(5) + 1):  # operating points
            r.u(12)  # operating_point_idc
            if r.u(5) > 7:  # seq_level_idx
                r.u(1)  # seq_tier
            if decoder_model_info and r.flag():
                r.skip(2 * buffer_delay_bits + 1)
            if initial_display_delay and r.flag():
                r.u(4)
    width_bits, height_bits = r.u(4) + 1, r.u(4) + 1
    return r.u(width_bits) + 1, r.u(height_bits) + 1


def picture_size(cfg: AV1CodecConfigurationRecord) -> tuple[int, int]:
    """(0, 0) when the record has no usable sequence header (configOBUs are optional)."""
    try:
        return parse_sequence_header_size(_sequence_header(cfg.config_obus))
    except RemoteProtocolError as exc:
        log.warning("cannot read picture size from the av1C: %s", exc)
        return 0, 0
