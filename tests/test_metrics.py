"""The Prometheus text format renderer."""
from livecast.metrics import render


def test_render_families_with_labels_and_escaping():
    text = render(
        [
            ("livecast_streams", "gauge", "Lives on air.", [({}, 2)]),
            ("livecast_stream_bitrate_kbps", "gauge", "Ingest bitrate.", [({"room": 'a"b', "live": "1"}, 2500.5)]),
        ]
    )
    assert text.splitlines() == [
        "# HELP livecast_streams Lives on air.",
        "# TYPE livecast_streams gauge",
        "livecast_streams 2",
        "# HELP livecast_stream_bitrate_kbps Ingest bitrate.",
        "# TYPE livecast_stream_bitrate_kbps gauge",
        'livecast_stream_bitrate_kbps{live="1",room="a\\"b"} 2500.5',
    ]
