"""origin/viewers.py: the concurrent-viewer estimate of the room listing."""
from __future__ import annotations

import pytest

from origin.viewers import ViewerCounter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_distinct_addresses_within_the_window():
    clock = Clock()
    v = ViewerCounter(window_s=10, clock=clock)
    assert v.count("r1") == 0
    for _ in range(5):  # one player reloading its playlist is one viewer
        v.seen("r1", "10.0.0.1")
    v.seen("r1", "10.0.0.2")
    v.seen("r2", "10.0.0.1")  # the same address watching another room counts there too
    assert (v.count("r1"), v.count("r2")) == (2, 1)
    clock.now += 6
    v.seen("r1", "10.0.0.2")  # still reloading
    clock.now += 5  # 10.0.0.1 silent for 11 s: gone
    assert v.count("r1") == 1 and v.count("r2") == 0
    assert v.counts() == {"r1": 1}
    clock.now += 10
    assert v.counts() == {} and v._rooms == {}  # idle rooms take no memory


def test_memory_is_bounded_per_room():
    clock = Clock()
    v = ViewerCounter(window_s=10, max_per_room=100, clock=clock)
    for i in range(10_000):
        v.seen("r1", f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.0001
    assert v.count("r1") == 100  # saturates at the cap
    assert len(v._rooms["r1"]) == 100
    v.seen("r1", None)  # no address (a Unix socket peer): not counted
    assert v.count("r1") == 100


def test_bad_limits_refused():
    with pytest.raises(ValueError):
        ViewerCounter(window_s=0)
    with pytest.raises(ValueError):
        ViewerCounter(max_per_room=0)
