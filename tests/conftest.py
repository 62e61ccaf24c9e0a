"""Shared fixtures: a real livecast server on ports picked by the OS, with a
real SQLite database in the test's tmp dir, and a live to publish to."""
from __future__ import annotations

import pytest

from livecast.config import load_config


def server_config(data_dir, **sections):
    """The default config on ports 0 and short deadlines, with overrides."""
    overrides = {
        "server": {"data_dir": str(data_dir)},
        "http": {"host": "127.0.0.1", "port": 0},
        "rtmp": {"host": "127.0.0.1", "port": 0},
        "hls": {"end_grace_s": 3.0},
        "transcode": {"enabled": False},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(environ={}, overrides=overrides)


def pytest_configure(config):
    config.addinivalue_line("markers", "server_config(**sections): config overrides for the `server` fixture")


@pytest.fixture
async def server(tmp_path, request):
    from livecast.app import Livecast

    marker = request.node.get_closest_marker("server_config")
    app = Livecast(server_config(tmp_path / "data", **(marker.kwargs if marker else {})))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def live(server):
    """The demo live of the running server: (live_id, room_id, stream_key)."""
    from storage.demo import ensure_demo

    demo = await ensure_demo(server.db, server.data_dir)
    return demo.live_id, demo.room_id, demo.stream_key


def rtmp_url(server, key: str) -> str:
    return f"{server.rtmp_url}/{key}"
