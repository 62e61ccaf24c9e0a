"""Request validation: bounded JSON bodies and field schemas.

Every body is read with a size limit (413 past it), must be a JSON object, and
is checked field by field: unknown fields, wrong types, lengths and formats are
all reported at once in `fields` of a 400 problem.
"""
from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from control_api.errors import ApiError, bad_request, is_api_path

# RFC 5321 4.5.3.1: 64-octet local part, 254 octets for the whole path.
EMAIL_MAX = 254
# A pragmatic address check (RFC 5322 dot-atom local part, a dotted domain);
# the mail itself is the real test.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
PASSWORD_MIN = 8
PASSWORD_MAX = 128  # well under storage.passwords.MAX_PASSWORD_BYTES at 4 bytes a char
NICKNAME_MAX = 64
TOKEN_MAX = 256
# A client trickling its body ties up a handler and its buffer; 10 s carries
# the default 64 KiB limit over the slowest link worth serving.
BODY_READ_TIMEOUT_S = 10.0
# Listing pages: bounds both the SQL and the answer's size.
PAGE_DEFAULT = 50
PAGE_MAX = 100
OFFSET_MAX = 10**9

# The body read (bounded) by body_limit_middleware, for read_json.
BODY_KEY = web.RequestKey("control_api_body", bytes)


@dataclass(frozen=True)
class Field:
    kind: type                       # str, int, bool
    required: bool = True
    min_len: int = 0                 # str: characters; int: minimum value
    max_len: int | None = None       # str: characters; int: maximum value
    check: Callable[[Any], str | None] | None = None   # returns an error text or None
    choices: tuple | None = None


def check_email(value: str) -> str | None:
    local, _, _ = value.partition("@")
    if len(value) > EMAIL_MAX or len(local) > 64 or not _EMAIL_RE.match(value):
        return "not a valid email address"
    return None


def check_text(value: str) -> str | None:
    # Control characters (newlines, NUL, bidi overrides) in names and titles
    # forge log lines and mail headers and spoof what others see.
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        return "must not contain control characters"
    if value.strip() != value:
        return "must not start or end with spaces"
    return None


def check_multiline(value: str) -> str | None:
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in value):
        return "must not contain control characters"
    return None


EMAIL = Field(str, min_len=3, max_len=EMAIL_MAX, check=check_email)
PASSWORD = Field(str, min_len=PASSWORD_MIN, max_len=PASSWORD_MAX)
NICKNAME = Field(str, min_len=1, max_len=NICKNAME_MAX, check=check_text)
TOKEN = Field(str, min_len=1, max_len=TOKEN_MAX)


def _check_field(name: str, spec: Field, value: Any) -> str | None:
    if spec.kind is int:
        # bool is an int in Python, never in JSON.
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        if value < spec.min_len or (spec.max_len is not None and value > spec.max_len):
            return f"must be between {spec.min_len} and {spec.max_len}"
    elif spec.kind is bool:
        if not isinstance(value, bool):
            return "must be true or false"
    elif spec.kind is str:
        if not isinstance(value, str):
            return "must be a string"
        if len(value) < spec.min_len:
            return "must not be empty" if spec.min_len == 1 else f"must be at least {spec.min_len} characters"
        if spec.max_len is not None and len(value) > spec.max_len:
            return f"must be at most {spec.max_len} characters"
    if spec.choices is not None and value not in spec.choices:
        return "must be one of " + ", ".join(map(str, spec.choices))
    if spec.check is not None:
        return spec.check(value)
    return None


def validate(data: Any, schema: dict[str, Field]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    errors: dict[str, str] = {}
    for name in data:
        if name not in schema:
            errors[str(name)[:64]] = "unknown field"
    for name, spec in schema.items():
        if name not in data:
            if spec.required:
                errors[name] = "required"
            continue
        error = _check_field(name, spec, data[name])
        if error:
            errors[name] = error
    if errors:
        raise bad_request("invalid fields", errors)
    return {k: v for k, v in data.items()}


async def read_body(request: web.Request, max_bytes: int, timeout_s: float = BODY_READ_TIMEOUT_S) -> bytes:
    """The request body, refused with 413 past `max_bytes` whether or not a
    Content-Length was sent (chunked bodies are counted as they arrive), and
    with 408 if it has not all arrived within `timeout_s`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"request body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, "payload_too_large", f"request body over {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"request body not received within {timeout_s:g} s") from None
    return b"".join(chunks)


def body_limit_middleware(max_bytes: int, timeout_s: float = BODY_READ_TIMEOUT_S):
    """Reads every /api/ request body, bounded in size and time, before any
    handler runs: routes that take no body (GET, DELETE, unknown paths) are
    limited too, rather than leaving an unread body for aiohttp to drain."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if is_api_path(request.path) and request.body_exists:
            request[BODY_KEY] = await read_body(request, max_bytes, timeout_s)
        return await handler(request)

    return middleware


async def read_json(request: web.Request, schema: dict[str, Field], max_bytes: int) -> dict[str, Any]:
    raw = request.get(BODY_KEY)
    if raw is None:
        raw = await read_body(request, max_bytes)
    ctype = request.content_type
    if raw and ctype not in ("application/json", "application/octet-stream") and not ctype.endswith("+json"):
        # A form post from another site cannot be JSON without a preflight.
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if not raw:
        data: Any = {}
    else:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    return validate(data, schema)


def page(request: web.Request) -> tuple[int, int]:
    """`limit` and `offset` of a listing, checked."""
    return (query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX),
            query_int(request, "offset", 0, 0, OFFSET_MAX))


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise bad_request("invalid query parameter", {name: f"must be an integer between {low} and {high}"})
    return int(raw)


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false", "1", "0"):
        raise bad_request("invalid query parameter", {name: "must be true or false"})
    return raw in ("true", "1")
