"""Stream keys: random, shown once, stored only as a SHA-256 digest."""
from __future__ import annotations

import hashlib
import hmac
import secrets

# 32 url-safe characters: 192 bits, far beyond guessing at the ingest's
# failed-publish rate limit.
KEY_BYTES = 24
MAX_KEY_LENGTH = 256


def new_stream_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
