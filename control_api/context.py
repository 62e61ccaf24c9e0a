"""What the control API gets from the composition root (ApiContext), and the
runtime state it builds from it (Api): token signer, mailer, rate limits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from aiohttp import web

from control_api.mail import Mailer
from control_api.ratelimit import RateLimiter
from control_api.tokens import AccessTokens, load_secret
from storage.database import Database


@dataclass
class ApiContext:
    db: Database
    config: SimpleNamespace          # the whole loaded config
    data_dir: Path
    public_url: str                  # e.g. "http://127.0.0.1:8080"
    rtmp_url: str                    # e.g. "rtmp://127.0.0.1:1935/live"
    drop_live: Callable[[int, str], bool]   # drops the active publisher of live_id
    streams: Callable[[], list[dict]]       # on-air streams from the ingest
    thumbnail_url: Callable[[str], str | None] = lambda room_id: None
    viewer_count: Callable[[str], int] = lambda room_id: 0   # viewers the origin saw lately


@dataclass
class Api:
    """Per-application state of the control API."""

    ctx: ApiContext
    tokens: AccessTokens
    mailer: Mailer
    login_by_address: RateLimiter
    login_by_account: RateLimiter
    signup_by_address: RateLimiter
    mail_by_key: RateLimiter
    max_body_bytes: int

    @property
    def api(self) -> SimpleNamespace:
        return self.ctx.config.api

    @property
    def db(self) -> Database:
        return self.ctx.db

    def public(self, path: str) -> str:
        return self.ctx.public_url.rstrip("/") + path

    @classmethod
    def build(cls, ctx: ApiContext) -> "Api":
        api = ctx.config.api
        per_minute = api.login_attempts_per_minute
        return cls(
            ctx=ctx,
            tokens=AccessTokens(load_secret(api.jwt_secret, ctx.data_dir), api.access_ttl_s),
            mailer=Mailer(ctx.config.mail, ctx.data_dir),
            login_by_address=RateLimiter(per_minute, 60.0),
            login_by_account=RateLimiter(per_minute, 60.0),
            signup_by_address=RateLimiter(getattr(api, "signups_per_hour", 20), 3600.0),
            mail_by_key=RateLimiter(getattr(api, "mails_per_hour", 5), 3600.0),
            max_body_bytes=ctx.config.http.max_body_bytes,
        )


API_KEY = web.AppKey("control_api", Api)


def get_api(request: web.Request) -> Api:
    return request.config_dict[API_KEY]
