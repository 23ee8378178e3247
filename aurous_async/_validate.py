"""Argument checks, in one place: every public entry point validates here before any
request goes out, so a bad argument is a ``TypeError``/``ValueError`` and costs nothing.

>>> number(2, "timeout")
2.0
>>> number(0, "timeout", minimum=0)
0.0
>>> path_id("a/b")
'a%2Fb'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from urllib.parse import quote

__all__ = [
    "check_bool",
    "check_headers",
    "integer",
    "number",
    "optional_bool",
    "optional_timeout",
    "path_id",
    "validate_idempotency_key",
]

_KEY_RE = re.compile(r"^[\x21-\x7e]{1,256}$")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")


def number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    error: type[ValueError] = ValueError,
) -> float:
    """``value`` as a finite float (never a bool); above 0 unless ``minimum`` is given
    (then at least ``minimum``), and at most ``maximum`` when given. ``error`` is the
    ``ValueError`` subclass raised for a value out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise error(f"{name} is too large: {value!r:.40}") from None
    if not math.isfinite(result):
        raise error(f"{name} must be a finite number, got {value!r}")
    if minimum is None and result <= 0:
        raise error(f"{name} must be a positive number, got {value!r}")
    if minimum is not None and result < minimum:
        raise error(f"{name} must be >= {minimum:g}, got {value!r}")
    if maximum is not None and result > maximum:
        raise error(f"{name} must be <= {maximum:g}, got {value!r}")
    return result


def integer(value: object, name: str, *, minimum: int = 0,
            error: type[ValueError] = ValueError) -> int:
    """``value`` as an int (never a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value!r}")
    return value


def optional_timeout(value: object, name: str = "timeout") -> float | None:
    """A positive number of seconds, or ``None`` for no limit."""
    return None if value is None else number(value, name)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def optional_bool(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None, not {type(value).__name__}")
    return value


def validate_idempotency_key(key: object) -> str | None:
    """Check a caller's ``idempotency_key``: 1–256 printable ASCII characters."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, not {type(key).__name__}")
    if not _KEY_RE.match(key):
        raise ValueError("idempotency_key must be 1-256 printable ASCII characters, no spaces")
    return key


def path_id(value: object, name: str = "character_id") -> str:
    """``value`` made safe as one path segment: ``../x``, ``a/b`` and ``a?b`` stay inside
    ``/v1/characters/{id}`` instead of escaping it."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if _PLAIN_ID.fullmatch(value):
        return value  # the common case (char_01HX…): nothing to check or quote
    if not value or len(value) > 256:
        raise ValueError(f"{name} must be 1-256 characters")
    if value in (".", "..") or not value.isprintable() or value != value.strip():
        raise ValueError(f"{name} is not a valid id: {value[:40]!r}")
    return quote(value, safe="")


#: Headers the SDK owns: a caller's headers may never replace them.
_RESERVED_HEADERS = frozenset({"x-api-key", "authorization", "idempotency-key", "aurous-version",
                               "content-type", "content-length", "host"})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")


def check_headers(headers: object, name: str = "extra_headers") -> dict[str, str] | None:
    """A caller's extra headers: str names and values, no CR/LF, none the SDK owns (the
    API key header above all). ``None`` stays ``None``."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str")
    checked: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{name} must map str to str")
        if not _HEADER_NAME.fullmatch(key) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"{name} has an invalid header: {key[:40]!r}")
        if key.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name} cannot set {key}: the SDK sets it")
        checked[key] = value
    return checked
