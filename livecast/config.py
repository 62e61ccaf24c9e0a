"""Configuration: configs/default.toml defines every key and its type; a
--config file, LIVECAST_<SECTION>_<KEY> environment variables and CLI flags
override it, in that order. Unknown keys and bad values stop start-up with a
message naming the key."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

from transcoder.ladder import parse_ladder

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "configs" / "default.toml"
ENV_PREFIX = "LIVECAST_"

# Values that must be positive or within a range; checked after merging.
_PORTS = {("http", "port"), ("rtmp", "port")}


class ConfigError(Exception):
    """A configuration value is unknown or invalid; the message names it."""


def load_defaults() -> dict[str, dict[str, Any]]:
    with open(DEFAULT_FILE, "rb") as f:
        return tomllib.load(f)


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if isinstance(default, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def _merge(config: dict, overrides: Mapping[str, Mapping[str, Any]], origin: str) -> None:
    for section, values in overrides.items():
        if section not in config:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in config[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            config[section][key] = _coerce(section, key, value, config[section][key])


def _env_overrides(environ: Mapping[str, str], sections: Mapping[str, Mapping]) -> dict:
    found: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                found.setdefault(section, {})[rest[len(section) + 1:]] = value
                break
        else:
            raise ConfigError(f"{name}: unknown section in environment variable")
    return found


def _validate(config: dict) -> None:
    for section, key in _PORTS:
        if not 0 <= config[section][key] <= 65535:
            raise ConfigError(f"{section}.{key}: port out of range 0..65535")
    for section, values in config.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{section}.{key}: must not be negative")
    hls = config["hls"]
    if hls["part_target_ms"] < 50 or hls["part_target_ms"] > hls["target_duration_ms"]:
        raise ConfigError("hls.part_target_ms: must be between 50 and hls.target_duration_ms")
    if hls["max_segment_ms"] and hls["max_segment_ms"] < hls["target_duration_ms"]:
        raise ConfigError("hls.max_segment_ms: must be 0 or at least hls.target_duration_ms")
    if hls["window_segments"] < 3:
        raise ConfigError("hls.window_segments: must be at least 3")


def load_config(
    path: str | os.PathLike | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> SimpleNamespace:
    """Defaults, then the file, then the environment, then explicit overrides
    (CLI flags). Returns sections as attributes: ``config.rtmp.port``."""
    config = load_defaults()
    if path is not None:
        try:
            with open(path, "rb") as f:
                from_file = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"--config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: {exc}") from None
        _merge(config, from_file, str(path))
    _merge(config, _env_overrides(os.environ if environ is None else environ, config), "environment")
    if overrides:
        _merge(config, overrides, "command line")
    _validate(config)
    try:
        parse_ladder(config["transcode"]["ladder"])
    except ValueError as exc:
        raise ConfigError(f"transcode.ladder: {exc}") from None
    return SimpleNamespace(**{name: SimpleNamespace(**values) for name, values in config.items()})


def data_dir(config: SimpleNamespace) -> Path:
    return Path(config.server.data_dir).expanduser().resolve()
