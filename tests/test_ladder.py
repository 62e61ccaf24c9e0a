"""The ABR ladder string and which renditions a source gets."""
import pytest

from transcoder.ladder import Rendition, parse_ladder, renditions_for


def test_parse_sorted_highest_first():
    ladder = parse_ladder("360p:360:700, 720p:720:2800,480p:480:1200")
    assert [r.name for r in ladder] == ["720p", "480p", "360p"]
    assert ladder[0] == Rendition("720p", 720, 2800)


@pytest.mark.parametrize(
    "text", ["720p:720", "720p:abc:100", "720p:721:100", "720p:720:10", "a:720:100,a:480:100", "Bad Name:720:100"]
)
def test_bad_items_raise_naming_the_item(text):
    with pytest.raises(ValueError, match="ladder item"):
        parse_ladder(text)


def test_renditions_at_or_above_the_source_are_skipped():
    ladder = parse_ladder("720p:720:2800,480p:480:1200,360p:360:700")
    assert [r.name for r in renditions_for(ladder, 1080)] == ["720p", "480p", "360p"]
    assert [r.name for r in renditions_for(ladder, 720)] == ["480p", "360p"]
    assert [r.name for r in renditions_for(ladder, 360)] == []


def test_width_keeps_aspect_and_is_even():
    assert Rendition("480p", 480, 1200).width_for(1920, 1080) == 854
    assert Rendition("360p", 360, 700).width_for(1280, 720) == 640
