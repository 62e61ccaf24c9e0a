"""32-bit RTMP timestamp unwrapping."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingest.timestamps import TimestampUnwrapper


def test_forward_wrap_at_2_32():
    u = TimestampUnwrapper()
    raw = [2**32 - 40, 2**32 - 20, 2**32 - 1, 5, 25]
    assert [u.unwrap(t) for t in raw] == [2**32 - 40, 2**32 - 20, 2**32 - 1, 2**32 + 5, 2**32 + 25]


def test_crossing_2_24_is_nothing_special():
    u = TimestampUnwrapper()
    raw = [2**24 - 33, 2**24 - 1, 2**24, 2**24 + 33]
    assert [u.unwrap(t) for t in raw] == raw


def test_small_backward_jitter_holds_then_continues_without_drift():
    u = TimestampUnwrapper()
    out = [u.unwrap(t) for t in (1000, 1021, 1019, 1043)]
    assert out[:4] == [1000, 1021, 1021, 1043]
    assert u.backward_steps == 1
    u = TimestampUnwrapper()
    # Jitter right at the wrap point.
    out = [u.unwrap(t) for t in (2**32 - 10, 3, 2**32 - 2, 20)]
    assert out == [2**32 - 10, 2**32 + 3, 2**32 + 3, 2**32 + 20]


def test_large_backward_jump_is_a_discontinuity():
    # A peer that wraps at 2**24 (dropped extended timestamp) jumps back by
    # ~4.6 h: continue from the last output instead of freezing.
    u = TimestampUnwrapper()
    assert [u.unwrap(t) for t in (2**24 - 40, 2**24 - 7, 26, 59)] == [2**24 - 40, 2**24 - 7, 2**24 - 7, 2**24 + 26]
    assert u.discontinuities == 1


@given(start=st.integers(0, 2**32 - 1), steps=st.lists(st.integers(-50, 5000), max_size=200))
def test_monotonic_and_exact_for_forward_steps(start, steps):
    u = TimestampUnwrapper()
    true_t = start
    last = u.unwrap(start)
    assert last == start
    for step in steps:
        true_t += step
        out = u.unwrap(true_t % 2**32)
        assert out >= last
        assert out == max(true_t, last)
        last = out
