"""Configuration: defaults, file, environment and CLI overrides, and the
errors that stop start-up naming the key."""
import pytest

from livecast.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "livecast.toml"
    path.write_text(text)
    return path


def test_defaults_load_with_every_section():
    config = load_config(environ={})
    assert config.rtmp.port == 1935
    assert config.http.port == 8080
    assert config.hls.target_duration_ms == 2000
    assert config.database.url == ""


def test_file_then_environment_then_cli(tmp_path):
    path = write(tmp_path, "[rtmp]\nport = 1936\n[hls]\npart_target_ms = 200\n")
    config = load_config(path, environ={"LIVECAST_RTMP_PORT": "1937"}, overrides={"http": {"port": 9000}})
    assert config.rtmp.port == 1937
    assert config.hls.part_target_ms == 200
    assert config.http.port == 9000


def test_environment_types_are_coerced():
    config = load_config(
        environ={
            "LIVECAST_API_REQUIRE_VERIFIED_EMAIL": "false",
            "LIVECAST_RTMP_IDLE_TIMEOUT_S": "12.5",
            "LIVECAST_API_CORS_ORIGINS": "https://a.example, https://b.example",
        }
    )
    assert config.api.require_verified_email is False
    assert config.rtmp.idle_timeout_s == 12.5
    assert config.api.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    "text, named",
    [
        ("[rtmp]\nprot = 1\n", "rtmp.prot"),
        ("[rtmpp]\nport = 1\n", "rtmpp"),
        ('[rtmp]\nport = "x"\n', "rtmp.port"),
        ("[rtmp]\nport = 70000\n", "rtmp.port"),
        ("[hls]\npart_target_ms = 5000\n", "hls.part_target_ms"),
        ("[hls]\nwindow_segments = 1\n", "hls.window_segments"),
        ("[api]\nrequire_verified_email = 3\n", "api.require_verified_email"),
        ('[transcode]\nladder = "720p:721:2800"\n', "transcode.ladder"),
        ('[transcode]\nladder = "source:720:2800"\n', "transcode.ladder"),
        ("[rtmp]\nidle_timeout_s = -1.0\n", "rtmp.idle_timeout_s"),
        ("not toml [", "livecast.toml"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, named):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert named in str(info.value)


def test_unknown_environment_section_is_an_error():
    with pytest.raises(ConfigError, match="LIVECAST_NOPE_X"):
        load_config(environ={"LIVECAST_NOPE_X": "1"})


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no-such.toml"):
        load_config(tmp_path / "no-such.toml", environ={})


def test_segment_cap_defaults_to_twice_the_target():
    from livecast.app import hls_settings

    assert hls_settings(load_config(environ={}).hls).max_segment_ms == 4000
    short = load_config(environ={"LIVECAST_HLS_TARGET_DURATION_MS": "1000"})
    assert hls_settings(short.hls).max_segment_ms == 2000
    assert hls_settings(short.hls).playlist_target_duration_s == 2
    with pytest.raises(ConfigError, match="hls.max_segment_ms"):
        load_config(environ={"LIVECAST_HLS_MAX_SEGMENT_MS": "1500"})
