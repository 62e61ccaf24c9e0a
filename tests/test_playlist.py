"""Media and multivariant playlists: each LL-HLS rule checked on the text as
parsed by the `m3u8` library (bis §4.4, §6.2)."""
from __future__ import annotations

import math

import m3u8
import pytest

from transcoder.multivariant import Variant, render_multivariant
from transcoder.playlist import Block, MediaPlaylist, RenditionReport, fmt_duration, fmt_pdt, init_uri

TS = 90000
PT = 22500  # 250 ms


def build(segments=10, parts_per_seg=8, window=6, last_parts=3, disc_at=(), td=4, first_msn=0, gop_parts=4):
    pl = MediaPlaylist(timescale=TS, target_duration_s=td, part_target=PT, window_segments=window,
                       first_msn=first_msn)
    pl.set_map(init_uri(first_msn))
    t = 1_700_000_000_000
    for s in range(segments + 1):
        if s in disc_at:
            pl.mark_discontinuity()
            pl.set_map(init_uri(pl.next_msn))
        n = parts_per_seg if s < segments else last_parts
        for i in range(n):
            pl.add_part(PT if i < n - 1 else PT - 3000, independent=i % gop_parts == 0, pdt_ms=t)
        if s < segments:
            seg, _removed = pl.complete_segment()
            t += seg.duration // 90
    return pl


def parse(text: str) -> m3u8.M3U8:
    return m3u8.loads(text)


def test_header_tags_and_server_control():
    pl = build()
    text = pl.render()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:6\n")
    p = parse(text)
    assert p.target_duration == 4
    sc = p.server_control
    assert sc.can_block_reload == "YES"
    assert sc.part_hold_back >= 3 * 0.25  # Apple 14.3
    assert sc.can_skip_until >= 6 * p.target_duration
    assert p.part_inf.part_target == 0.25
    assert "#EXT-X-ENDLIST" not in text and "#EXT-X-PLAYLIST-TYPE" not in text


def test_target_duration_never_exceeded():
    p = parse(build().render())
    complete = [s for s in p.segments if s.uri]  # m3u8 lists the open segment's parts uri-less
    assert complete and all(math.ceil(s.duration) <= p.target_duration for s in complete)


def test_part_durations_within_part_target():
    p = parse(build().render())
    parts = [pt for s in p.segments for pt in s.parts]
    assert parts and all(pt.duration <= p.part_inf.part_target for pt in parts)


def test_msn_continuity_and_sliding_window():
    pl = build(segments=20, window=6, first_msn=100)
    p = parse(pl.render())
    complete = [s for s in p.segments if s.uri]
    assert p.media_sequence == 100 + 20 - len(complete)
    assert [s.uri for s in complete] == [f"seg{p.media_sequence + i}.m4s" for i in range(len(complete))]
    # Window: >= 6 segments and >= 3 x TD of media (bis 6.2.2).
    assert len(complete) >= 6 and sum(s.duration for s in complete) >= 3 * p.target_duration
    # Parts of the open segment carry the next MSN.
    assert p.segments[-1].parts[0].uri == f"seg{100 + 20}.0.m4s"


def test_independent_parts_marked():
    p = parse(build(gop_parts=4).render())
    for s in p.segments:
        for i, pt in enumerate(s.parts):
            assert (pt.independent == "YES") == (i % 4 == 0)


def test_preload_hint_is_the_next_part():
    pl = build(last_parts=3)
    p = parse(pl.render())
    assert p.preload_hint.hint_type == "PART"
    assert p.preload_hint.uri == "seg10.3.m4s"
    pl.add_part(PT, False, pdt_ms=0)
    assert parse(pl.render()).segments[-1].parts[-1].uri == "seg10.3.m4s"
    pl.add_part(PT, False, pdt_ms=0)
    pl.complete_segment()
    assert parse(pl.render()).preload_hint.uri == "seg11.0.m4s"


def test_old_parts_are_removed_from_the_playlist():
    p = parse(build(segments=12, window=10).render())
    complete = [s for s in p.segments if s.uri]
    end = sum(s.duration for s in complete)
    pos = 0
    for s in complete:
        pos += s.duration
        if s.parts:
            assert end - pos <= 3 * p.target_duration + 1e-6
    assert not p.segments[0].parts


def test_program_date_time_on_every_segment():
    text = build().render()
    p = parse(text)
    assert all(s.program_date_time is not None for s in p.segments if s.uri)
    # The open segment's PDT precedes its first part (m3u8 does not keep it).
    lines = text.splitlines()
    first_open_part = lines.index('#EXT-X-PART:DURATION=0.25000,URI="seg10.0.m4s",INDEPENDENT=YES')
    assert lines[first_open_part - 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    assert fmt_pdt(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_delta_update_skip():
    pl = build(segments=40, window=30, td=2)
    full, delta = parse(pl.render()), parse(pl.render(skip=True))
    assert "#EXT-X-VERSION:9" in pl.render(skip=True)
    skipped = delta.skip.skipped_segments
    assert skipped > 0
    assert delta.media_sequence == full.media_sequence  # still the first (skipped) segment
    full_uris = [s.uri for s in full.segments]
    assert [s.uri for s in delta.segments] == full_uris[skipped:]
    # Nothing within CAN-SKIP-UNTIL of the end was skipped.
    tail = sum(s.duration for s in full.segments[skipped - 1:] if s.uri) - full.segments[skipped - 1].duration
    assert tail >= full.server_control.can_skip_until - 1e-6
    pl.end()
    assert "#EXT-X-SKIP" not in pl.render(skip=True)  # ignored once ended


def test_discontinuity_and_its_sequence():
    pl = build(segments=20, window=6, disc_at=(3, 17))
    text = pl.render()
    p = parse(text)
    assert p.discontinuity_sequence == 1  # the tag on segment 3 slid out
    disc = [s for s in p.segments if s.discontinuity]
    assert len(disc) == 1 and disc[0].uri == "seg17.m4s"
    assert disc[0].init_section.uri == "init-17.mp4"
    # DISCONTINUITY goes before MAP, MAP before the parts.
    i = text.index("#EXT-X-DISCONTINUITY\n")
    assert text[i:].split("\n")[1] == '#EXT-X-MAP:URI="init-17.mp4"'


def test_endlist_and_no_hint():
    pl = build()
    pl.end()
    p = parse(pl.render())
    assert p.is_endlist and p.preload_hint is None
    assert pl.block(10_000, 5) is Block.READY  # directives ignored after ENDLIST


def test_blocking_predicate():
    pl = build(segments=10, last_parts=3)  # complete 0..9, open 10 with parts 0..2
    assert pl.block(9, None) is Block.READY
    assert pl.block(10, None) is Block.WAIT  # segment 10 not complete
    assert pl.block(10, 2) is Block.READY and pl.block(10, 3) is Block.WAIT
    assert pl.block(9, 20) is Block.READY  # beyond parent's last part = 10.0, which exists
    assert pl.block(11, 0) is Block.WAIT
    assert pl.block(11, 5) is Block.WAIT  # last complete (9) + 2 is allowed
    assert pl.block(12, 0) is Block.TOO_FAR
    assert pl.block(10, 3 + pl.advance_part_limit()) is Block.TOO_FAR
    assert pl.part_published(10, 2) is True and pl.part_published(10, 3) is None
    assert pl.part_published(9, 8) is False and pl.part_published(9, 0) is True


def test_rendition_reports():
    p = parse(build().render(reports=[RenditionReport("../720p/index.m3u8", 10, 2)]))
    (r,) = p.rendition_reports
    assert (r.uri, r.last_msn, r.last_part) == ("../720p/index.m3u8", 10, 2)


def test_durations_render_as_rounded_decimals():
    assert fmt_duration(22500, TS) == "0.25000"
    assert fmt_duration(3003, TS) == "0.03337"
    assert fmt_duration(1024, 44100) == "0.02322"


def test_multivariant():
    text = render_multivariant([
        Variant("source/index.m3u8", 3_000_000, 2_500_000, "avc1.64001f,mp4a.40.2", 1280, 720, 29970),
        Variant("480p/index.m3u8", 1_200_000, 1_000_000, "avc1.64001e,mp4a.40.2", 854, 480, 30000),
    ])
    p = parse(text)
    assert p.is_variant and len(p.playlists) == 2
    top = p.playlists[0].stream_info
    assert top.bandwidth == 3_000_000 and top.average_bandwidth == 2_500_000
    assert top.codecs == "avc1.64001f,mp4a.40.2" and top.resolution == (1280, 720)
    assert top.frame_rate == pytest.approx(29.97)
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text


def test_has_file_knows_what_the_window_holds():
    pl = build(segments=10, window=6, last_parts=3)  # complete 3..9 (>= 3 x TD), open 10 with 0..2
    assert pl.has_file("seg9.m4s") and pl.has_file("seg9.7.m4s") and pl.has_file("seg10.2.m4s")
    assert pl.has_file("init-0.mp4")
    # Slid out (still on disk for a grace period: the origin asks the disk), or not made yet.
    assert pl.media_sequence == 3 and pl.has_file("seg3.m4s")
    assert not pl.has_file("seg2.m4s") and not pl.has_file("seg2.0.m4s")
    assert not pl.has_file("seg10.m4s") and not pl.has_file("seg10.3.m4s") and not pl.has_file("init-10.mp4")
    assert not pl.has_file("index.m3u8") and not pl.has_file("state.json")


def test_map_hint_after_a_new_init_segment():
    pl = build(segments=3, last_parts=0)  # 3 complete segments, nothing open
    assert parse(pl.render()).preload_hint.uri == "seg3.0.m4s"
    assert "TYPE=MAP" not in pl.render()
    pl.mark_discontinuity()
    pl.set_map(init_uri(3))  # a reconnect with a new codec config: init written, no part yet
    text = pl.render()
    hints = [line for line in text.splitlines() if line.startswith("#EXT-X-PRELOAD-HINT")]
    assert hints == ['#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="init-3.mp4"',
                     '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg3.0.m4s"']  # at most one per TYPE
    assert pl.has_file("init-3.mp4")
    pl.add_part(PT, True, pdt_ms=0)
    assert "TYPE=MAP" not in pl.render()  # the open segment's EXT-X-MAP names it now
    assert '#EXT-X-MAP:URI="init-3.mp4"' in pl.render()
