"""Packager: real PyAV-encoded H.264/AAC items in, fMP4 files and playlists
out (through a real SegmentStore on disk)."""
from __future__ import annotations

import asyncio
import io
import json
import re
import struct

import av
import m3u8
import pytest

import hls_media
from ingest.frames import AUDIO, VIDEO, Frame, StreamEnd, StreamStart
from storage.segments import SegmentStore
from transcoder.hls_settings import HlsSettings
from transcoder.mp4box import iter_boxes
from transcoder.packager import Packager

ROOM, REND = "room1", "source"
FAST = HlsSettings(target_duration_ms=1000, part_target_ms=250, max_segment_ms=2000, window_segments=6)


class ListConsumer:
    """Stands in for a hub Consumer: yields the items, then None (live over)."""

    def __init__(self, items):
        self.items = list(items)

    async def get(self):
        await asyncio.sleep(0)
        return self.items.pop(0) if self.items else None


def session(sid, vc, v, ac, a):
    items = [StreamStart(1, sid)] + [c for c in (vc, ac) if c is not None]
    return items + hls_media.interleave(*(t for t in (v, a) if t)) + [StreamEnd(1, sid, "unpublish")]


async def package(store, items, settings=FAST, **kw):
    p = Packager(ROOM, REND, store, settings, **kw)
    await p.run(ListConsumer(items))
    return p


def read(store, name):
    return store.read(ROOM, REND, name)


def playlist(store) -> tuple[str, m3u8.M3U8]:
    text = read(store, "index.m3u8").decode()
    return text, m3u8.loads(text)


def traf_samples(data: bytes):
    """[(track_id, [(dts, duration, flags, cto, size)])] for every traf in every moof."""
    out = []
    for kind, s, e in iter_boxes(data):
        if kind != b"moof":
            continue
        for k2, ts, te in iter_boxes(data, s, e):
            if k2 != b"traf":
                continue
            kids = {k: (a, b) for k, a, b in iter_boxes(data, ts, te)}
            tid = struct.unpack_from(">I", data, kids[b"tfhd"][0] + 4)[0]
            dts = struct.unpack_from(">Q", data, kids[b"tfdt"][0] + 4)[0]
            tr = kids[b"trun"][0]
            count = struct.unpack_from(">I", data, tr + 4)[0]
            samples = []
            for i in range(count):
                dur, size, flags, cto = struct.unpack_from(">IIIi", data, tr + 12 + 16 * i)
                samples.append((dts, dur, flags, cto, size))
                dts += dur
            out.append((tid, samples))
    return out


@pytest.fixture(scope="module")
def av3():
    vc, v = hls_media.h264(3.0, fps=30, gop=15)
    ac, a = hls_media.aac(3.0)
    return vc, v, ac, a


@pytest.fixture
def store(tmp_path):
    return SegmentStore(tmp_path / "hls")


async def test_segments_and_parts_decode_with_source_frames(store, av3):
    vc, v, ac, a = av3
    p = await package(store, session(1, vc, v, ac, a))
    text, pl = playlist(store)
    assert pl.is_endlist and "#EXT-X-PRELOAD-HINT" not in text
    init = read(store, pl.segments[0].init_section.uri)
    segs = [read(store, s.uri) for s in pl.segments]
    whole = init + b"".join(segs)
    base = v[0].dts
    with av.open(io.BytesIO(whole)) as c:
        vframes = list(c.decode(video=0))
    assert len(vframes) == len(v)
    assert [f.pts for f in vframes] == sorted((f.pts - base) * 90 for f in v)
    with av.open(io.BytesIO(whole)) as c:
        assert sum(1 for _ in c.decode(audio=0)) == len(a)
    names = store.list(ROOM, REND)
    for s in pl.segments:
        msn = int(re.match(r"seg(\d+)", s.uri).group(1))
        parts = sorted((n for n in names if re.fullmatch(rf"seg{msn}\.\d+\.m4s", n)),
                       key=lambda n: int(n.split(".")[1]))
        assert b"".join(read(store, n) for n in parts) == read(store, s.uri)  # segment = its parts
        with av.open(io.BytesIO(init + read(store, s.uri))) as c:
            assert len(list(c.decode(video=0))) > 0  # each segment decodes on its own (starts with IDR)
        for n in parts:
            first_video = next(smp for tid, smp in traf_samples(read(store, n)) if tid == 1)[0]
            if first_video[2] == 0x02000000:  # independent part: decodable alone
                with av.open(io.BytesIO(init + read(store, n))) as c:
                    assert len(list(c.decode(video=0))) >= 1
    assert p.output.codecs == "avc1.64000d,mp4a.40.2"
    assert (p.output.width, p.output.height) == (320, 240)
    assert 29_000 < p.output.frame_rate_milli < 31_000
    assert p.output.peak_bandwidth >= p.output.average_bandwidth > 0


async def test_playlist_rules_on_a_real_stream(store, av3):
    vc, v, ac, a = av3
    await package(store, session(1, vc, v, ac, a)[:-1])  # no StreamEnd: consumer just ends
    _text, pl = playlist(store)
    assert all(s.duration <= pl.target_duration for s in pl.segments)
    assert [s.uri for s in pl.segments] == [f"seg{pl.media_sequence + i}.m4s" for i in range(len(pl.segments))]
    for s in pl.segments:
        assert s.parts, "recent segments list their parts"
        for part in s.parts:
            assert part.duration <= pl.part_inf.part_target
            first_video = next(smp for tid, smp in traf_samples(read(store, part.uri)) if tid == 1)[0]
            assert (part.independent == "YES") == (first_video[2] == 0x02000000)
        assert s.parts[0].independent == "YES"  # segments start on keyframes
        assert abs(sum(p.duration for p in s.parts) - s.duration) < 1e-4


async def test_av_drift_after_60s_below_one_audio_frame(store):
    """60 s of synthetic frames (10 fps video, 48 kHz AAC with ms-jittered times)."""
    vc, _v = hls_media.h264(0.1)
    ac, _a = hls_media.aac(0.1)
    items = synthetic(vc, ac, 60)
    settings = HlsSettings(target_duration_ms=2000, max_segment_ms=4000, window_segments=100)
    await package(store, items, settings)
    _text, pl = playlist(store)
    video, audio = [], []
    for s in pl.segments:
        for tid, samples in traf_samples(read(store, s.uri)):
            (video if tid == 1 else audio).extend(samples)
    assert len(video) == 600 and len(audio) == 60 * 48000 // 1024
    # Video is exact: ms x 90.
    assert [d for d, *_ in video] == [i * 9000 for i in range(600)]
    # Audio is counted in samples: no gaps, no drift against the source clock.
    assert all(b[0] == a_[0] + a_[1] for a_, b in zip(audio, audio[1:]))
    for i in (0, len(audio) // 2, len(audio) - 1):
        src_ms = i * 1024 * 1000 // 48000
        assert abs(audio[i][0] * 1000 / 48000 - src_ms) < 1024 * 1000 / 48000
    v_end = (video[-1][0] + video[-1][1]) / 90000
    a_end = (audio[-1][0] + audio[-1][1]) / 48000
    assert abs(v_end - a_end) < 1024 / 48000 + 0.1  # ends differ by < one audio frame (+ last video frame)
    total = sum(s.duration for s in pl.segments)
    assert abs(total - v_end) < 1e-3  # EXTINF sums to the media time


async def test_reconnect_adds_discontinuity_and_msn_never_goes_back(store, av3):
    vc, v, ac, a = av3
    small_vc, small_v = hls_media.h264(2.0, width=160, height=120)
    items = session(1, vc, v, ac, a) + session(2, vc, v, ac, a) + session(3, small_vc, small_v, ac, a[:90])
    p = await package(store, items, HlsSettings(target_duration_ms=1000, max_segment_ms=2000, window_segments=50))
    text, pl = playlist(store)
    msns = [int(s.uri[3:-4]) for s in pl.segments]
    assert msns == list(range(msns[0], msns[0] + len(msns)))
    disc = [i for i, s in enumerate(pl.segments) if s.discontinuity]
    assert len(disc) == 2
    maps = [s.init_section.uri for s in pl.segments]
    assert maps[disc[0]] == maps[0]  # same codec config: same init segment
    assert maps[disc[1]] != maps[0] and read(store, maps[disc[1]]) is not None  # new config: new init
    assert p.output.width == 160
    # The timeline continues across the reconnect (tfdt never goes back).
    ends = []
    for s in pl.segments:
        vids = [smp for tid, smp in traf_samples(read(store, s.uri)) if tid == 1]
        ends.append((vids[0][0][0], vids[-1][-1][0] + vids[-1][-1][1]))
    assert all(b[0] >= a_[1] for a_, b in zip(ends, ends[1:]))
    assert text.count("#EXT-X-DISCONTINUITY\n") == 2


async def test_restart_continues_msn_from_disk(store, av3):
    vc, v, ac, a = av3
    p1 = await package(store, session(1, vc, v, ac, a))
    last1 = p1.playlist.next_msn - 1
    state = json.loads(read(store, "state.json"))
    assert state["next_msn"] == last1 + 1
    p2 = await package(store, session(2, vc, v, ac, a))
    _text, pl = playlist(store)
    assert pl.media_sequence == last1 + 1
    assert pl.discontinuity_sequence > p1.playlist.discontinuity_sequence
    assert read(store, f"seg{last1}.m4s") is None  # the previous run's files were cleaned up
    assert p2.playlist.next_msn > last1 + 1


def synthetic(vc, ac, seconds: int, fps: int = 10, gop: int = 20, t0: int = 500) -> list:
    """Frames with real configs and dummy payloads: for timing-only tests."""
    n = seconds * fps
    frames = [Frame(VIDEO, "h264", t0 + i * 1000 // fps, t0 + i * 1000 // fps, i % gop == 0, b"\0\0\0\x01\x65")
              for i in range(n)]
    frames += [Frame(AUDIO, "aac", t0 + i * 1024 * 1000 // 48000, t0 + i * 1024 * 1000 // 48000, True, b"\x21")
               for i in range(seconds * 48000 // 1024)]
    return [StreamStart(1, 1), vc, ac] + hls_media.interleave(frames) + [StreamEnd(1, 1, "x")]


async def test_files_deleted_after_grace_period(store, av3):
    vc, v, ac, a = av3
    now = [0.0]

    def clock():
        now[0] += 0.5  # every segment completion moves the clock on
        return now[0]

    settings = HlsSettings(target_duration_ms=250, part_target_ms=250, max_segment_ms=1000,
                           window_segments=3, delete_grace_s=2)
    p = await package(store, synthetic(vc, ac, 12), settings, monotonic=clock)
    names = set(store.list(ROOM, REND))
    first = p.playlist.media_sequence
    assert first > 3
    assert "seg0.m4s" not in names and "seg0.0.m4s" not in names
    assert all(f"seg{m}.m4s" in names for m in range(first, p.playlist.next_msn))


async def test_audio_only_stream(store, av3):
    _vc, _v, ac, a = av3
    p = await package(store, session(1, None, None, ac, a))
    _text, pl = playlist(store)
    assert p.output.codecs == "mp4a.40.2" and p.output.width == 0
    assert all(s.duration <= pl.target_duration for s in pl.segments)
    whole = read(store, pl.segments[0].init_section.uri) + b"".join(read(store, s.uri) for s in pl.segments)
    with av.open(io.BytesIO(whole)) as c:
        assert sum(1 for _ in c.decode(audio=0)) == len(a)


async def test_waits_for_video_keyframe_and_drops_frames_without_config(store, av3):
    vc, v, ac, a = av3
    first_key = next(i for i, f in enumerate(v) if f.keyframe and i > 0)
    items = [StreamStart(1, 1), Frame(VIDEO, "h264", 0, 0, True, b"\0\0\0\x01\x65"), vc, ac]
    items += hls_media.interleave(v[first_key - 3:], a)  # starts mid-GOP
    await package(store, items)
    _text, pl = playlist(store)
    init = read(store, pl.segments[0].init_section.uri)
    with av.open(io.BytesIO(init + b"".join(read(store, s.uri) for s in pl.segments))) as c:
        assert len(list(c.decode(video=0))) == len(v) - first_key


class RecordingStore(SegmentStore):
    """A real store that also keeps every playlist text written: all that a
    reader (nginx, a player woken by the notify that follows) ever sees."""

    def __init__(self, root):
        super().__init__(root)
        self.playlists: list[str] = []

    def write(self, room_id, rendition, name, data):
        super().write(room_id, rendition, name, data)
        if name == "index.m3u8":
            self.playlists.append(data.decode())


async def test_no_playlist_hints_a_part_that_is_never_made(tmp_path, av3):
    """A keyframe closes a segment right after its last part: that part and
    its parent are published together, so the hint never points past the
    parent's last part (a void hint, answered 404: bis 6.2.6)."""
    vc, v, ac, a = av3
    store = RecordingStore(tmp_path / "hls")
    await package(store, session(1, vc, v, ac, a) + session(2, vc, v, ac, a))
    hint_re = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')
    made = {line.split('URI="')[1].split('"')[0] for text in store.playlists
            for line in text.splitlines() if line.startswith("#EXT-X-PART:")}
    hints = [m.group(1) for text in store.playlists if (m := hint_re.search(text))]
    assert len(hints) > 20 and any(h.endswith(".0.m4s") for h in hints)
    # Only the hint of the part that the end of the live (ENDLIST) cancelled.
    assert [h for h in hints if h not in made] == [hints[-1]], "void preload hints"
    assert "#EXT-X-PRELOAD-HINT" not in store.playlists[-1]  # ENDLIST
