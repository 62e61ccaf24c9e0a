"""GET /api/v1/openapi.json: an OpenAPI 3.1 description of every route,
written by hand (a test checks it against the router both ways)."""
from __future__ import annotations

from aiohttp import web

from control_api.errors import json_response
from control_api.validation import EMAIL_MAX, NICKNAME_MAX, PASSWORD_MAX, PASSWORD_MIN
from storage.models import REPORT_CONTENT_MAX

routes = web.RouteTableDef()


def _s(kind: str, **extra) -> dict:
    return {"type": kind, **extra}


EMAIL_S = _s("string", format="email", maxLength=EMAIL_MAX)
PASSWORD_S = _s("string", minLength=PASSWORD_MIN, maxLength=PASSWORD_MAX)
TOKEN_S = _s("string", minLength=1, maxLength=256)
STATE_S = {"live_state": _s("string", enum=["idle", "blocked"])}
UNBLOCK_S = {"unblock_lives": _s("boolean", default=False)}


def _body(props: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def op(summary: str, auth: str | None = None, body: dict | None = None, required: list[str] | None = None,
       ok: int = 200, errors: tuple[int, ...] = (), query: dict | None = None) -> dict:
    """auth: None (public), "member", "producer" or "admin"."""
    responses: dict = {str(ok): {"description": "success"}}
    # Every /api/ route reads a body sent to it with the same size and time
    # limits (validation.body_limit_middleware), so 413 and 408 are everywhere.
    codes = set(errors) | {408, 413}
    if body is not None:
        codes |= {400}
    if auth:
        codes |= {401, 403}
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    operation: dict = {"summary": summary, "responses": responses}
    if auth:
        operation["security"] = [{"bearer": []}]
        operation["x-role"] = auth
    if body is not None:
        operation["requestBody"] = _body(body, required if required is not None else list(body))
    if query:
        operation["parameters"] = [{"name": n, "in": "query", "required": False, "schema": s} for n, s in query.items()]
    return operation


PAGE = {"limit": _s("integer", minimum=1, maximum=100, default=50), "offset": _s("integer", minimum=0, default=0)}
ROOM_TITLE = _s("string", minLength=1, maxLength=120)
ROOM_INFO = _s("string", maxLength=2000)

PATHS: dict[str, dict] = {
    "/api/v1/auth/signup": {"post": op("Create an account; a verification mail is sent", None,
                                       {"email": EMAIL_S, "password": PASSWORD_S,
                                        "nickname": _s("string", minLength=1, maxLength=NICKNAME_MAX)},
                                       ok=201, errors=(409, 429))},
    "/api/v1/auth/verify": {
        "get": op("Verify an email with the token from the mail (the mail's link)", None, ok=200, errors=(400,),
                  query={"token": TOKEN_S}),
        "post": op("Verify an email with the token from the mail", None, {"token": TOKEN_S}, errors=(400,)),
    },
    "/api/v1/auth/verify/resend": {"post": op("Mail a new verification token", None, {"email": EMAIL_S}, ok=202,
                                              errors=(429,))},
    "/api/v1/auth/login": {"post": op("Log in: an access JWT and a refresh token", None,
                                      {"email": EMAIL_S, "password": _s("string", maxLength=1024)},
                                      errors=(401, 403, 429))},
    "/api/v1/auth/refresh": {"post": op("Rotate a refresh token for new tokens; a reused token revokes its family",
                                        None, {"refresh_token": TOKEN_S}, errors=(401, 403))},
    "/api/v1/auth/logout": {"post": op("Revoke the login the refresh token belongs to", None,
                                       {"refresh_token": TOKEN_S}, ok=204, errors=(401,))},
    "/api/v1/auth/password-reset": {"post": op("Mail a password-reset token", None, {"email": EMAIL_S}, ok=202,
                                               errors=(429,))},
    "/api/v1/auth/password-reset/confirm": {"post": op("Set a new password with a reset token; revokes all logins",
                                                       None, {"token": TOKEN_S, "new_password": PASSWORD_S}, ok=204)},
    "/api/v1/me": {
        "get": op("The logged-in member", "member"),
        "patch": op("Change the nickname", "member", {"nickname": _s("string", minLength=1, maxLength=NICKNAME_MAX)}),
    },
    "/api/v1/me/password": {"post": op("Change the password; revokes all refresh tokens", "member",
                                       {"current_password": _s("string"), "new_password": PASSWORD_S}, ok=204,
                                       errors=(429,))},
    "/api/v1/me/rooms": {"get": op("Rooms the member produces", "member")},
    "/api/v1/members/{member_id}": {"get": op("A member's public profile", None, errors=(404,))},
    "/api/v1/rooms": {
        "get": op("List rooms (on-air first)", None, query={**PAGE, "live": _s("boolean")}, errors=(400,)),
        "post": op("Create a room and its live; the answer holds the stream key (shown once)", "member",
                   {"room_title": ROOM_TITLE, "room_info": ROOM_INFO}, ["room_title"], ok=201),
    },
    "/api/v1/rooms/{room_id}": {
        "get": op("A room, with its producers' public names", None, errors=(404,)),
        "patch": op("Change title or info", "producer", {"room_title": ROOM_TITLE, "room_info": ROOM_INFO}, [],
                    errors=(404,)),
        "delete": op("Delete the room and its live (409 while on air)", "producer", ok=204, errors=(404, 409)),
    },
    "/api/v1/rooms/{room_id}/producers": {
        "get": op("The room's producers", "producer", errors=(404,)),
        "post": op("Add a co-producer by member_id or email (exactly one)", "producer",
                   {"member_id": _s("integer", minimum=1), "email": EMAIL_S}, [], ok=201, errors=(404, 409)),
    },
    "/api/v1/rooms/{room_id}/producers/{member_id}": {
        "delete": op("Remove a producer (not the last one)", "producer", ok=204, errors=(404, 409)),
    },
    "/api/v1/rooms/{room_id}/live": {"get": op("The room's live: state and RTMP URL (key hidden)", "producer",
                                               errors=(404,))},
    "/api/v1/lives/{live_id}": {"get": op("A live: state and RTMP URL (key hidden)", "producer", errors=(404,))},
    "/api/v1/lives/{live_id}/key": {"post": op("Rotate the stream key; drops a publisher using the old one. "
                                               "The answer holds the new key (shown once)", "producer", {}, [],
                                               errors=(404,))},
    "/api/v1/lives/{live_id}/state": {"put": op("Block (drops the publisher) or unblock the live", "producer",
                                                STATE_S, errors=(404, 409))},
    "/api/v1/lives/{live_id}/options": {
        "get": op("Per-live options", "producer", errors=(404,)),
        "put": op("Set per-live options", "producer", {"passthrough_only": _s("boolean")}, errors=(404,)),
    },
    "/api/v1/reports": {"post": op("Report a member; again raises count", "member",
                                   {"member_id": _s("integer", minimum=1),
                                    "content": _s("string", minLength=1, maxLength=REPORT_CONTENT_MAX)},
                                   ok=201, errors=(404, 429))},
    "/api/v1/admin/reports": {"get": op("Reports grouped by reported member, most distinct reporters first", "admin",
                                        query={**PAGE, "include_resolved": _s("boolean")}, errors=(400,))},
    "/api/v1/admin/reports/{member_id}/resolve": {"post": op("Resolve a member's open reports", "admin", UNBLOCK_S, [],
                                                             errors=(404,))},
    "/api/v1/admin/members": {"get": op("List members", "admin", query={**PAGE, "email": EMAIL_S}, errors=(400,))},
    "/api/v1/admin/members/{member_id}/suspend": {"post": op("Suspend: no login, lives blocked, publishers dropped",
                                                             "admin", {}, [], errors=(404,))},
    "/api/v1/admin/members/{member_id}/unsuspend": {"post": op("Lift a suspension", "admin", UNBLOCK_S, [],
                                                               errors=(404,))},
    "/api/v1/admin/lives": {"get": op("List lives", "admin",
                                      query={**PAGE, "live_state": _s("string", enum=["idle", "live", "blocked"])},
                                      errors=(400,))},
    "/api/v1/admin/lives/{live_id}/state": {"put": op("Set any live's state; blocked drops the publisher", "admin",
                                                      STATE_S, errors=(404, 409))},
    "/api/v1/streams": {"get": op("Lives on air now")},
    "/api/v1/openapi.json": {"get": op("This document")},
}

_PARAMS = {
    "room_id": _s("string", pattern="^[a-z0-9_-]{1,32}$"),
    "live_id": _s("integer", minimum=1),
    "member_id": _s("integer", minimum=1),
}


def _with_path_params(paths: dict) -> dict:
    out = {}
    for path, item in paths.items():
        names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        if names:
            item = {"parameters": [{"name": n, "in": "path", "required": True, "schema": _PARAMS[n]} for n in names],
                    **item}
        out[path] = item
    return out


_ERRORS = {400: "validation failed or malformed JSON", 401: "missing, invalid or expired token",
           403: "not allowed (role, producer, suspended, unverified)", 404: "not found", 409: "conflict",
           408: "request body not received in time", 413: "request body too large",
           429: "rate limited; see Retry-After"}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "livecast control API", "version": "1",
             "description": "Errors are JSON problems: {\"error\": code, \"message\": text, \"fields\": {field: reason}}. "
                            "Authenticate with Authorization: Bearer <access token>; query-string tokens are ignored."},
    "paths": _with_path_params(PATHS),
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {"Problem": {"type": "object", "required": ["error", "message", "fields"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}},
        "responses": {f"E{code}": {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}} for code, text in _ERRORS.items()},
    },
}


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)
