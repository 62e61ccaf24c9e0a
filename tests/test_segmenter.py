"""Segmenter: where parts and segments are cut (pure, synthetic samples)."""
from __future__ import annotations

import logging

from hypothesis import given, settings, strategies as st

from transcoder.fmp4 import Sample
from transcoder.segmenter import PartReady, Segmenter, SegmentReady

FRAME = 3000  # 30 fps at 90 kHz


def video(n: int, gop: int, frame: int = FRAME, size: int = 100) -> list[Sample]:
    return [Sample(i * frame, frame, 0, i % gop == 0, b"x" * size) for i in range(n)]


def run(seg: Segmenter, samples, track=1, main=True):
    events = []
    for s in samples:
        events += seg.push(track, s, main=main)
    return events + seg.flush()


def segments(events):
    """[[PartReady...], SegmentReady] groups."""
    out, cur = [], []
    for ev in events:
        if isinstance(ev, PartReady):
            cur.append(ev)
        else:
            out.append((cur, ev))
            cur = []
    assert not cur
    return out


def make(**kw):
    args = dict(has_video=True, part_target=22500, target_duration=180000, max_segment_duration=360000)
    args.update(kw)
    return Segmenter(**args)


def test_parts_never_exceed_part_target():
    events = run(make(), video(300, 60))
    parts = [e for e in events if isinstance(e, PartReady)]
    assert parts and all(p.duration <= 22500 for p in parts)
    # 250 ms target at 30 fps: 7 frames, i.e. 233 ms >= 85 % of the target, except the last of a parent.
    for group, _seg in segments(events):
        assert all(p.duration >= 0.85 * 22500 for p in group[:-1])


def test_segments_cut_at_first_keyframe_after_target():
    events = run(make(), video(300, 45))  # GOP 1.5 s, target 2 s -> 3 s segments
    groups = segments(events)
    for group, seg in groups[:-1]:
        first = group[0].samples[1][0]
        assert first.sync and group[0].independent
        assert seg.duration == 90 * FRAME and not seg.forced
        assert seg.parts == len(group) and seg.duration == sum(p.duration for p in group)


def test_independent_parts_exactly_at_keyframes():
    events = run(make(), video(300, 14))
    for p in (e for e in events if isinstance(e, PartReady)):
        assert p.independent == p.samples[1][0].sync


def test_forced_cut_when_keyframes_stop(caplog):
    seg = make()
    with caplog.at_level(logging.WARNING):
        events = run(seg, video(600, 10_000))  # one keyframe, then none for 20 s
    groups = segments(events)
    assert all(s.duration <= 360000 for _g, s in groups)
    assert sum(s.forced for _g, s in groups) == len(groups) - 1 == seg.forced_cuts
    assert "forced segment cut" in caplog.text


def test_forced_cut_at_byte_cap():
    seg = make(max_segment_bytes=5000)
    groups = segments(run(seg, video(120, 10_000, size=1000)))
    assert all(sum(len(s.data) for p in g for ss in p.samples.values() for s in ss) <= 5000 for g, _ in groups)
    assert seg.forced_cuts == len(groups) - 1


def test_audio_only_cuts_by_duration():
    seg = Segmenter(has_video=False, part_target=12000, target_duration=96000, max_segment_duration=192000)
    samples = [Sample(i * 1024, 1024, 0, True, b"a" * 10) for i in range(400)]
    groups = segments(run(seg, samples))
    for group, s in groups[:-1]:
        assert 96000 <= s.duration < 96000 + 1024
        assert all(p.duration <= 12000 and p.independent for p in group)


def test_audio_rides_along_in_the_open_part():
    seg = make()
    events = []
    for i, v in enumerate(video(60, 30)):
        events += seg.push(1, v, main=True)
        events += seg.push(2, Sample(i * 1600, 1600, 0, True, b"a"), main=False)
    events += seg.flush()
    parts = [e for e in events if isinstance(e, PartReady)]
    assert sum(len(p.samples.get(2, [])) for p in parts) == 60
    assert sum(len(p.samples[1]) for p in parts) == 60


@settings(max_examples=60, deadline=None)
@given(gop=st.integers(1, 400), frame=st.sampled_from([1500, 3000, 3003, 3600, 6000]),
       n=st.integers(1, 500))
def test_property_caps_and_keyframe_starts(gop, frame, n):
    seg = make()
    events = run(seg, video(n, gop, frame))
    groups = segments(events)
    assert sum(len(p.samples[1]) for g, _ in groups for p in g) == n
    for g, s in groups:
        assert s.duration <= 360000
        assert all(p.duration <= 22500 for p in g)
    # Every segment not preceded by a forced cut starts with a keyframe.
    prev_forced = False
    for g, s in groups:
        if not prev_forced:
            assert g[0].samples[1][0].sync
        prev_forced = s.forced
