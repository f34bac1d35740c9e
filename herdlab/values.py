"""Keys and the DB's deterministic values.

Every value is a pure function of (key, version), so any client can check that what it received
is the value of the key it asked for, at the version it was told.
"""

from __future__ import annotations

import hashlib

MAX_KEY_BYTES = 256
# A key of at most this many characters is within the limit without encoding it: a character
# is at most 4 bytes of UTF-8 (a lone surrogate, passed through, is 3).
_SURELY_SHORT = MAX_KEY_BYTES // 4


def key_error(key: str) -> str | None:
    """Why `key` is not a valid key, or None. Keys are 1..256 bytes of UTF-8."""
    if 0 < len(key) <= _SURELY_SHORT:
        return None
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
