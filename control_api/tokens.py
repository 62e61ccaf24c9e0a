"""Access tokens (JWT, RFC 7519, HS256 per RFC 7518 3.2) and opaque tokens.

The algorithm is pinned on both sides: a token whose header names any other
algorithm (`none`, RS256 keyed with our secret, ...) is refused before the
signature is even looked at (RFC 8725 3.1, 2.1). Refresh and mail tokens are
random opaque strings stored only as SHA-256 digests.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
SECRET_FILE = "jwt-secret"
# Tokens from clocks a little ahead of ours are still accepted.
CLOCK_LEEWAY_S = 5
# 256 bits: refresh and mail tokens are unguessable.
OPAQUE_TOKEN_BYTES = 32
ISSUER = "livecast"


class TokenError(Exception):
    """The token is missing, malformed, expired, forged or of another kind."""


def load_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, or one generated once and kept (mode 0600) in
    the data dir so restarts keep existing logins valid."""
    if configured:
        secret = configured.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"api.jwt_secret must be at least {MIN_SECRET_BYTES} bytes")
        return secret
    path = Path(data_dir) / SECRET_FILE
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process created it first: use theirs.
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
        log.info("generated a JWT secret in %s", path)
        return secret
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: JWT secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret


@dataclass(frozen=True)
class AccessClaims:
    member_id: int
    jti: str
    issued_at: int
    expires_at: int


class AccessTokens:
    def __init__(self, secret: bytes, ttl_s: int, clock=time.time) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, member_id: int) -> str:
        now = int(self._clock())
        claims = {
            "sub": str(member_id),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
            "typ": "access",
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> AccessClaims:
        if not token or len(token) > 4096:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        # Checked here as well as by PyJWT: the one algorithm we issue.
        if header.get("alg") != ALGORITHM:
            raise TokenError("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
            raise TokenError("invalid token")
        return AccessClaims(int(claims["sub"]), str(claims["jti"]), int(claims["iat"]), int(claims["exp"]))


def new_opaque_token() -> str:
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_family() -> str:
    return uuid.uuid4().hex
