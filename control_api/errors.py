"""JSON problem responses for the control API, and the middleware that makes
every /api/ answer one: ``{"error": code, "message": text, "fields": {...}}``.

Only paths under /api/ are touched; the HLS origin and the player pages on the
same application keep their own error pages and CORS.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ApiError(Exception):
    """An error answered as a JSON problem with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}


def bad_request(message: str, fields: dict[str, str] | None = None) -> ApiError:
    return ApiError(400, "validation_failed", message, fields)


def unauthorized(message: str = "authentication required", code: str = "unauthorized") -> ApiError:
    # RFC 6750 3: a bearer-protected resource names its scheme on 401.
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="livecast"'})


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


def too_many(message: str, retry_after_s: float) -> ApiError:
    return ApiError(429, "rate_limited", message, headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))})


# Codes for aiohttp's own HTTP exceptions (no route, wrong method, body too big).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

# Answers from the API are per-user and must never be stored by a shared cache.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def problem(status: int, code: str, message: str, fields: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": code, "message": message, "fields": fields or {}})
    response = web.Response(status=status, text=body, content_type="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")


@web.middleware
async def problem_middleware(request: web.Request, handler):
    if not is_api_path(request.path):
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = problem(exc.status, exc.code, exc.message, exc.fields, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        message = exc.reason if exc.status != 413 else "request body too large"
        response = problem(exc.status, _HTTP_CODES.get(exc.status, "error"), message, None, headers)
    except Exception:
        # The traceback goes to the log; the client learns nothing internal.
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = problem(500, "internal_error", "internal server error")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
