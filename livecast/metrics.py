"""/metrics in the Prometheus text exposition format (version 0.0.4)."""
from __future__ import annotations

from typing import Callable, Iterable

from aiohttp import web

METRICS = web.AppKey("metrics", object)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(families: Iterable[tuple[str, str, str, list[tuple[dict, float]]]]) -> str:
    """families: (name, type, help, [(labels, value), ...])."""
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"


async def metrics_handler(request: web.Request) -> web.Response:
    collect: Callable[[], list] = request.app[METRICS]
    return web.Response(text=render(collect()), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
