"""Keys and the DB's deterministic values.

Every value is a pure function of (key, version), so any client can check that what it received
is the value of the key it asked for, at the version it was told.
"""

from __future__ import annotations

import hashlib

MAX_KEY_BYTES = 256


def key_error(key: str) -> str | None:
    """Why `key` is not a valid key, or None. Keys are 1..256 bytes of UTF-8."""
    if not key:
        return "key must not be empty"
    size = len(key.encode("utf-8", errors="surrogatepass"))
    if size > MAX_KEY_BYTES:
        return f"key is {size} bytes; the limit is {MAX_KEY_BYTES} bytes of UTF-8"
    return None


def value_for(key: str, version: int) -> str:
    """The DB's value for `key` at `version`."""
    digest = hashlib.sha256(f"{version}\x00{key}".encode()).hexdigest()[:16]
    return f"v{version}:{digest}"
