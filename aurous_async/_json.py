"""JSON answers decoded with orjson when it is installed (the ``speed`` extra), giving
exactly what the standard library's :func:`json.loads` gives — value or error.

orjson parses a Character about three times faster, but differs from ``json.loads``
in four ways, each handled here:

* it refuses what ``json.loads`` accepts (``NaN``, ``Infinity``, lone surrogates, a
  byte-order mark, UTF-16): on any refusal the standard library decodes instead, so its
  value or its own error is the answer;
* it turns an integer beyond 64 bits into a ``float`` (every version up to 3.13 at
  least) where ``json.loads`` keeps an ``int``: a body with a run of 19 digits or more
  (where such a number would have to be) goes to the standard library (a reader that
  checks the type of every value it uses may look for such a run only when one is not
  what it expects: :func:`loads_unscanned`);
* it nests up to 1,024 levels, while ``json.loads`` raises ``RecursionError`` some way
  below 1,000 (its limit is the interpreter's, less the stack in use): a body that
  could nest 500 levels deep goes to the standard library;
* before 3.9.15 it had no nesting limit at all, and crashes the process on a body of
  nested brackets a few megabytes long (CVE-2024-27454): such a version is not used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["UNSCANNED_MAY_DIFFER", "loads", "loads_unscanned", "may_hold_a_long_integer"]

# A body that could nest this deep goes to the standard library: nesting that deep
# needs an opening bracket per level, and a closing one.
_DEEP = 500
# Every digit becomes "9", everything else stays: a 19-digit run is then a search.
_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)
_LONG_NUMBER = b"9" * 19


def _orjson() -> Callable[[bytes], Any] | None:
    """orjson's ``loads``, if it is installed and limits nesting (3.9.15 and later)."""
    try:
        from orjson import JSONDecodeError
        from orjson import loads as orjson_loads
    except ImportError:
        return None
    try:
        orjson_loads(b"[" * 1100 + b"]" * 1100)
    except JSONDecodeError:
        return orjson_loads
    return None  # an old orjson: a deep enough body would crash the process


_fast = _orjson()
#: Whether :func:`loads_unscanned` may differ from :func:`loads` at all (only orjson
#: turns long integers into floats): without it there is nothing to scan for later.
UNSCANNED_MAY_DIFFER = _fast is not None


def loads(raw: bytes) -> Any:
    """``raw`` decoded as :func:`json.loads` decodes it (its errors included)."""
    if _fast is None or may_hold_a_long_integer(raw):
        return json.loads(raw)
    return loads_unscanned(raw)


def may_hold_a_long_integer(raw: bytes) -> bool:
    """Whether ``raw`` has a run of 19 digits or more, where an integer that orjson
    would turn into a ``float`` would have to be (about 7 µs per KB: scanning is the
    dearest part of :func:`loads`, hence :func:`loads_unscanned`)."""
    return _LONG_NUMBER in raw.translate(_DIGITS_AS_NINES)


def loads_unscanned(raw: bytes) -> Any:
    """:func:`loads` without the scan for long integers: what ``json.loads`` gives, or
    the same value with a ``float`` where an integer beyond 64 bits was. Only for a
    caller that checks every value it uses and then calls
    :func:`may_hold_a_long_integer` whenever one is not what it expects."""
    if _fast is None or (len(raw) >= 2 * _DEEP
                         and raw.count(b"[") + raw.count(b"{") >= _DEEP):
        return json.loads(raw)
    try:
        return _fast(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        return json.loads(raw)
