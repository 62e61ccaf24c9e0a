"""MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the body of the FLV
AAC sequence header and of the E-RTMP `mp4a` SequenceStart: object type,
sampling rate, channels, samples per frame, and the RFC 6381 codec string
(`mp4a.40.<audioObjectType>`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .bitreader import BitReader
from .errors import RemoteProtocolError

# 14496-3 Table 1.18, samplingFrequencyIndex 0..12 (13, 14 reserved; 15 escape).
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
# channelConfiguration -> channel count (Table 1.19; 0 = defined in a PCE).
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
# Object types whose GASpecificConfig starts with frameLengthFlag.
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
_SBR, _PS = 5, 29


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    object_type: int  # audioObjectType as signalled first (5 = explicit HE-AAC)
    core_object_type: int  # the codec under SBR/PS (2 = AAC-LC)
    sample_rate: int  # core sampling rate: AAC frames are counted in it
    channels: int  # 0 if only a program config element tells
    samples_per_frame: int  # 1024, or 960 when frameLengthFlag is set
    extension_sample_rate: int = 0  # SBR output rate, explicit signalling only

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def _object_type(r: BitReader) -> int:
    aot = r.u(5)
    return 32 + r.u(6) if aot == 31 else aot


def _sample_rate(r: BitReader) -> int:
    index = r.u(4)
    if index == 15:
        return r.u(24)
    if index >= len(SAMPLE_RATES):
        raise RemoteProtocolError(f"AudioSpecificConfig samplingFrequencyIndex {index} is reserved")
    return SAMPLE_RATES[index]


def parse_asc(data: bytes) -> AudioSpecificConfig:
    if len(data) < 2:
        raise RemoteProtocolError(f"AAC sequence header too short ({len(data)} bytes)")
    r = BitReader(data, what="AudioSpecificConfig")
    object_type = _object_type(r)
    if object_type == 0:
        raise RemoteProtocolError("AudioSpecificConfig audioObjectType 0 is null")
    sample_rate = _sample_rate(r)
    channel_config = r.u(4)
    core = object_type
    ext_rate = 0
    if object_type in (_SBR, _PS):
        ext_rate = _sample_rate(r)
        core = _object_type(r)
    frame_length_flag = False
    if core in _GA_OBJECT_TYPES and r.bits_left >= 1:
        frame_length_flag = r.flag()
    if sample_rate <= 0:
        raise RemoteProtocolError("AudioSpecificConfig sample rate 0")
    return AudioSpecificConfig(
        object_type=object_type,
        core_object_type=core,
        sample_rate=sample_rate,
        channels=_CHANNELS.get(channel_config, 0),
        samples_per_frame=960 if frame_length_flag else 1024,
        extension_sample_rate=ext_rate,
    )
