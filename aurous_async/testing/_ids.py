"""Prefixed ULIDs as the real API mints them (``char_01HXMQ7Z3K8Y2NABCDEFGHJKMR``)."""

from __future__ import annotations

import os

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(wall_time: float) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    value = (int(wall_time * 1000) & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, wall_time: float) -> str:
    """A prefixed id (``char_…``, ``req_…``) whose ULID starts at ``wall_time``."""
    return f"{prefix}_{ulid(wall_time)}"
