"""FLV tag bodies of RTMP audio (type 8) and video (type 9) messages turned
into CodecConfig and Frame items.

Covers the legacy FLV 10.1 headers (Annex E.4.2.1 AUDIODATA / AACAUDIODATA,
E.4.3.1 VIDEODATA / AVCVIDEOPACKET) and Enhanced RTMP v2 (ExVideoTagHeader
and ExAudioTagHeader with FourCC, ModEx, multitrack). See
shared/reference/rtmp.md §7-8. The codec is taken from the bitstream header
bits, never from connect or onMetaData (OBS sends HEVC/AV1 without any
fourCcList).

Sans-I/O: one call per RTMP message, returning the items it carries.
"""
from __future__ import annotations

import logging

from . import aac, av1, avc, hevc
from .errors import RemoteProtocolError, UnsupportedCodec
from .frames import AUDIO, VIDEO, CodecConfig, Frame
from .timestamps import DEFAULT_MAX_BACKWARD_MS, TimestampUnwrapper

log = logging.getLogger(__name__)

# Legacy FLV codec ids and sound formats, named for the UnsupportedCodec message.
_VIDEO_CODEC_IDS = {
    1: "JPEG", 2: "Sorenson H.263", 3: "Screen video", 4: "On2 VP6",
    5: "On2 VP6 with alpha", 6: "Screen video v2", 7: "AVC/H.264",
    12: "HEVC (non-standard FLV codec id 12)", 13: "AV1 (non-standard FLV codec id 13)",
}
_SOUND_FORMATS = {
    0: "linear PCM (platform endian)", 1: "ADPCM", 2: "MP3", 3: "linear PCM (little endian)",
    4: "Nellymoser 16 kHz", 5: "Nellymoser 8 kHz", 6: "Nellymoser", 7: "G.711 A-law",
    8: "G.711 mu-law", 10: "AAC", 11: "Speex", 14: "MP3 8 kHz", 15: "device-specific sound",
}
_CODEC_ID_AVC = 7
_CODEC_ID_HEVC_LEGACY = 12  # pre-E-RTMP Chinese stacks: same layout as AVC, hvcC body
_SOUND_FORMAT_EX_HEADER = 9
_SOUND_FORMAT_AAC = 10

# VideoFrameType (FLV E.4.3.1 / E-RTMP): 1 key, 2 inter, 3 disposable, 4 generated key, 5 command.
_KEY_FRAME_TYPES = (1, 4)
_FRAME_TYPE_COMMAND = 5

# E-RTMP VideoPacketType
V_SEQUENCE_START, V_CODED_FRAMES, V_SEQUENCE_END, V_CODED_FRAMES_X = 0, 1, 2, 3
V_METADATA, V_MPEG2TS_SEQUENCE_START, V_MULTITRACK, V_MODEX = 4, 5, 6, 7
# E-RTMP AudioPacketType
A_SEQUENCE_START, A_CODED_FRAMES, A_SEQUENCE_END = 0, 1, 2
A_MULTICHANNEL_CONFIG, A_MULTITRACK, A_MODEX = 4, 5, 7
# AvMultitrackType
MT_ONE_TRACK, MT_MANY_TRACKS, MT_MANY_TRACKS_MANY_CODECS = 0, 1, 2

VIDEO_FOURCCS = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1"}
AUDIO_FOURCCS = {b"mp4a": "aac", b"Opus": "opus"}
_FOURCC_NAMES = {
    b"vp09": "VP9", b"vp08": "VP8", b"vvc1": "VVC/H.266", b"fLaC": "FLAC",
    b"ac-3": "AC-3", b"ec-3": "E-AC-3", b".mp3": "MP3",
}
# Codecs whose CodedFrames carry an SI24 composition time (E-RTMP v2).
_CTS_CODECS = ("h264", "hevc")
_OPUS_HEAD_MIN = 19  # RFC 7845 §5.1 ID header without a channel mapping table


class _Cursor:
    """Bounds-checked reader over one message payload."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self.data, self.pos, self.what = data, pos, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RemoteProtocolError(
                f"truncated {self.what} message: need {n} bytes at offset {self.pos}, have {len(self.data)}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def _si24(b: bytes) -> int:
    # CompositionTime is SI24: parsing it unsigned gave PTS + 16 777 182 ms
    # with B-frame encoders (gortmplib PR #88, nginx-rtmp #250).
    return int.from_bytes(b, "big", signed=True)


def _skip_modex(cur: _Cursor) -> int:
    """Skip E-RTMP ModEx prefixes; return the real packet type that follows.

    The only ModEx type defined (TimestampOffsetNano) is a sub-millisecond
    offset, below our millisecond timescale, so its data is ignored."""
    while True:
        size = cur.u8() + 1
        if size == 256:
            size = cur.uint(2) + 1
        cur.take(size)
        packet_type = cur.u8() & 0x0F
        if packet_type != V_MODEX:  # the same value (7) for audio and video
            return packet_type


class MediaParser:
    """Parser state of one publish session: the current codec configs, the
    NAL length size, and one timestamp unwrapper per track.

    Only track 0 of multitrack messages is used; other tracks are counted
    in `ignored_tracks`. Frames that arrive before their track's CodecConfig
    are dropped and counted in `dropped_before_config`. A sequence header
    equal to the current one is not emitted again (some encoders repeat it
    before every keyframe; consumers treat a new config as a codec change).
    """

    def __init__(self, *, max_backward_ms: int = DEFAULT_MAX_BACKWARD_MS) -> None:
        self.dropped_before_config = 0
        self.ignored_tracks = 0
        self.empty_frames = 0
        self._configs: dict[str, CodecConfig] = {}
        self._length_size: dict[str, int] = {}
        self._clocks = {
            VIDEO: TimestampUnwrapper(max_backward_ms=max_backward_ms),
            AUDIO: TimestampUnwrapper(max_backward_ms=max_backward_ms),
        }

    @property
    def configs(self) -> dict[str, CodecConfig]:
        return dict(self._configs)

    # -- video ---------------------------------------------------------------

    def video(self, timestamp: int, payload: bytes) -> list[CodecConfig | Frame]:
        if not payload:
            raise RemoteProtocolError("empty video message")
        b0 = payload[0]
        if b0 & 0x80:  # IsExHeader (E-RTMP)
            return self._ex_video(timestamp, payload)
        frame_type, codec_id = (b0 >> 4) & 0x07, b0 & 0x0F
        if codec_id not in (_CODEC_ID_AVC, _CODEC_ID_HEVC_LEGACY):
            name = _VIDEO_CODEC_IDS.get(codec_id, "unknown")
            raise UnsupportedCodec(f"FLV video codec id {codec_id} ({name}) is not supported; send H.264, or HEVC/AV1 via Enhanced RTMP")
        codec = "h264" if codec_id == _CODEC_ID_AVC else "hevc"
        if frame_type == _FRAME_TYPE_COMMAND:
            return []  # video info/command frame: a seek marker, no media
        cur = _Cursor(payload, 1, "video")
        packet_type = cur.u8()
        cts = _si24(cur.take(3))
        body = cur.rest()
        if packet_type == 0:
            return self._video_config(codec, body)
        if packet_type == 1:
            return self._video_frame(codec, timestamp, cts, frame_type in _KEY_FRAME_TYPES, body)
        if packet_type == 2:
            return []  # end of sequence
        raise RemoteProtocolError(f"unknown AVCPacketType {packet_type}")

    def _ex_video(self, timestamp: int, payload: bytes) -> list[CodecConfig | Frame]:
        cur = _Cursor(payload, 1, "video")
        frame_type, packet_type = (payload[0] >> 4) & 0x07, payload[0] & 0x0F
        if packet_type == V_MODEX:
            packet_type = _skip_modex(cur)
        if packet_type != V_METADATA and frame_type == _FRAME_TYPE_COMMAND:
            return []  # one VideoCommand byte (seek start/end), no media
        return self._tracks(cur, packet_type, V_MULTITRACK, timestamp, frame_type, self._ex_video_body)

    def _ex_video_body(self, timestamp: int, frame_type: int, packet_type: int, fourcc: bytes, body: bytes) -> list:
        codec = VIDEO_FOURCCS.get(fourcc)
        if codec is None:
            name = _FOURCC_NAMES.get(fourcc, "unknown")
            raise UnsupportedCodec(f"Enhanced RTMP video FourCC {fourcc!r} ({name}) is not supported; send avc1, hvc1 or av01")
        keyframe = frame_type in _KEY_FRAME_TYPES
        if packet_type == V_SEQUENCE_START:
            return self._video_config(codec, body)
        if packet_type == V_CODED_FRAMES:
            if codec in _CTS_CODECS:
                if len(body) < 3:
                    raise RemoteProtocolError(f"truncated {fourcc.decode()} CodedFrames: no composition time")
                return self._video_frame(codec, timestamp, _si24(body[:3]), keyframe, body[3:])
            return self._video_frame(codec, timestamp, 0, keyframe, body)
        if packet_type == V_CODED_FRAMES_X:
            return self._video_frame(codec, timestamp, 0, keyframe, body)
        # SequenceEnd, Metadata (HDR colorInfo), MPEG2TSSequenceStart (OBS and
        # FFmpeg send av1C in SequenceStart) and reserved types carry no frames.
        return []

    def _video_config(self, codec: str, record: bytes) -> list[CodecConfig]:
        width = height = 0
        if codec == "h264":
            avcc = avc.parse_avcc(record)
            width, height = avc.picture_size(avcc)
            length_size, length_byte = avcc.length_size, 4
        elif codec == "hevc":
            hvcc = hevc.parse_hvcc(record)
            width, height = hevc.picture_size(hvcc)
            length_size, length_byte = hvcc.length_size, 21
        else:  # av1: OBUs, no NAL length prefixes
            width, height = av1.picture_size(av1.parse_av1c(record))
            length_size, length_byte = 0, -1
        if length_size not in (0, 4):
            # Frames are re-prefixed with 4-byte lengths (the Frame contract),
            # so the record must say lengthSizeMinusOne = 3.
            record = record[:length_byte] + bytes([record[length_byte] | 0x03]) + record[length_byte + 1 :]
        return self._set_config(CodecConfig(VIDEO, codec, record, width=width, height=height), length_size)

    def _video_frame(self, codec: str, timestamp: int, cts: int, keyframe: bool, data: bytes) -> list[Frame]:
        dts = self._frame_dts(VIDEO, codec, timestamp, data)
        if dts is None:
            return []
        length_size = self._length_size[VIDEO]
        if length_size:
            data = _normalise_nal_lengths(data, length_size, codec)
        return [Frame(VIDEO, codec, dts, dts + cts, keyframe, data)]

    # -- audio ---------------------------------------------------------------

    def audio(self, timestamp: int, payload: bytes) -> list[CodecConfig | Frame]:
        if not payload:
            return []  # a zero-length audio message is the legacy "silence" marker
        sound_format = payload[0] >> 4
        if sound_format == _SOUND_FORMAT_AAC:
            # The low nibble (rate/size/type) is fixed 0xF for AAC and says
            # nothing: the AudioSpecificConfig has the real values (E.4.2.1).
            cur = _Cursor(payload, 1, "audio")
            packet_type = cur.u8()
            body = cur.rest()
            if packet_type == 0:
                return self._audio_config("aac", body)
            if packet_type == 1:
                return self._audio_frame("aac", timestamp, body)
            raise RemoteProtocolError(f"unknown AACPacketType {packet_type}")
        if sound_format == _SOUND_FORMAT_EX_HEADER:
            cur = _Cursor(payload, 1, "audio")
            packet_type = payload[0] & 0x0F
            if packet_type == A_MODEX:
                packet_type = _skip_modex(cur)
            return self._tracks(cur, packet_type, A_MULTITRACK, timestamp, 0, self._ex_audio_body)
        name = _SOUND_FORMATS.get(sound_format, "unknown")
        raise UnsupportedCodec(f"FLV sound format {sound_format} ({name}) is not supported; send AAC, or Opus via Enhanced RTMP")

    def _ex_audio_body(self, timestamp: int, _frame_type: int, packet_type: int, fourcc: bytes, body: bytes) -> list:
        codec = AUDIO_FOURCCS.get(fourcc)
        if codec is None:
            name = _FOURCC_NAMES.get(fourcc, "unknown")
            raise UnsupportedCodec(f"Enhanced RTMP audio FourCC {fourcc!r} ({name}) is not supported; send mp4a or Opus")
        if packet_type == A_SEQUENCE_START:
            return self._audio_config(codec, body)
        if packet_type == A_CODED_FRAMES:
            return self._audio_frame(codec, timestamp, body)
        return []  # SequenceEnd, MultichannelConfig (channels come from the config), reserved

    def _audio_config(self, codec: str, record: bytes) -> list[CodecConfig]:
        if codec == "aac":
            asc = aac.parse_asc(record)
            sample_rate, channels = asc.sample_rate, asc.channels
        else:  # opus: the RFC 7845 §5.1 ID header ("OpusHead")
            if len(record) < _OPUS_HEAD_MIN or not record.startswith(b"OpusHead"):
                raise RemoteProtocolError("Opus sequence start is not an OpusHead")
            channels = record[9]
            sample_rate = 48000  # Opus always decodes at 48 kHz (RFC 7845 §5.1)
        return self._set_config(CodecConfig(AUDIO, codec, record, sample_rate=sample_rate, channels=channels), 0)

    def _audio_frame(self, codec: str, timestamp: int, data: bytes) -> list[Frame]:
        dts = self._frame_dts(AUDIO, codec, timestamp, data)
        if dts is None:
            return []
        return [Frame(AUDIO, codec, dts, dts, True, data)]

    # -- shared --------------------------------------------------------------

    def _tracks(self, cur: _Cursor, packet_type: int, multitrack: int, timestamp: int, frame_type: int, body_fn) -> list:
        """Walk the (possibly multitrack) body of an E-RTMP message and hand
        track 0's packet to body_fn; the whole message is consumed (E-RTMP v2
        says a server MUST process a message that batches several tracks)."""
        mt_type = None
        fourcc = b""
        if packet_type == multitrack:
            b = cur.u8()
            mt_type, packet_type = b >> 4, b & 0x0F
            if mt_type not in (MT_ONE_TRACK, MT_MANY_TRACKS, MT_MANY_TRACKS_MANY_CODECS):
                raise RemoteProtocolError(f"unknown AvMultitrackType {mt_type}")
            if packet_type == multitrack:
                raise RemoteProtocolError("nested multitrack packet")
            if mt_type != MT_MANY_TRACKS_MANY_CODECS:
                fourcc = cur.take(4)
        else:
            fourcc = cur.take(4)
        out: list = []
        while True:
            track = 0
            if mt_type is None:
                body = cur.rest()
            else:
                if mt_type == MT_MANY_TRACKS_MANY_CODECS:
                    fourcc = cur.take(4)
                track = cur.u8()
                body = cur.rest() if mt_type == MT_ONE_TRACK else cur.take(cur.uint(3))
            if track == 0:
                out += body_fn(timestamp, frame_type, packet_type, fourcc, body)
            else:
                self.ignored_tracks += 1
            if mt_type in (None, MT_ONE_TRACK) or cur.remaining == 0:
                return out

    def _frame_dts(self, kind: str, codec: str, timestamp: int, data: bytes) -> int | None:
        """The frame's unwrapped dts, or None when the frame is dropped: it
        precedes its track's CodecConfig (or belongs to another codec than
        it), or it is empty. The track's clock sees every timestamp, dropped
        or not, so a wrap during a dropped stretch is still counted."""
        dts = self._clocks[kind].unwrap(timestamp)
        cfg = self._configs.get(kind)
        if cfg is None or cfg.codec != codec:
            self.dropped_before_config += 1
            return None
        if not data:
            self.empty_frames += 1
            return None
        return dts

    def _set_config(self, cfg: CodecConfig, length_size: int) -> list[CodecConfig]:
        if self._configs.get(cfg.kind) == cfg:
            return []
        self._configs[cfg.kind] = cfg
        self._length_size[cfg.kind] = length_size
        return [cfg]


def _normalise_nal_lengths(data: bytes, length_size: int, codec: str) -> bytes:
    """Check that the NAL length prefixes tile the access unit exactly and
    re-prefix with 4-byte lengths if the stream uses 1 or 2. A length that
    runs past the end would make the packager write a corrupt sample."""
    pos, n = 0, len(data)
    if length_size == 4:
        while pos < n:
            if pos + 4 > n:
                raise RemoteProtocolError(f"truncated NAL length in a {codec} frame")
            pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        if pos != n:
            raise RemoteProtocolError(f"truncated NAL unit in a {codec} frame")
        return data
    out = bytearray()
    while pos < n:
        if pos + length_size > n:
            raise RemoteProtocolError(f"truncated NAL length in a {codec} frame")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > n:
            raise RemoteProtocolError(f"truncated NAL unit in a {codec} frame")
        out += size.to_bytes(4, "big")
        out += data[pos : pos + size]
        pos += size
    return bytes(out)
