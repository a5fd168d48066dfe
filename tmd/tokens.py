"""
Secrets: bearer tokens and room passwords.

Tokens are 256 random bits and are stored only as SHA-256 hashes (a hash of so
much randomness needs no slow KDF); passwords are people's words, so they get
scrypt, a memory-hard KDF, and are checked in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_id() -> str:
    """A public identifier (a participant's): unguessable enough, short enough to show."""
    return secrets.token_urlsafe(12)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def hash_password(password: str) -> str:
    """scrypt, with a fresh salt; slow on purpose: call it in a thread."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """True if C{password} matches C{stored}; slow on purpose: call it in a thread."""
    _, n, r, p, salt, digest = stored.split("$")
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                            dklen=len(expected), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
