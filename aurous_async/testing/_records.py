"""The fake server's records: teams, characters, uploads, buckets, idempotency entries,
charges and logged requests. Plain data; :mod:`._state` holds the rules that change it.

Nothing here imports the client side of the SDK: the fake is a second, independent
reading of the API docs, so a misreading cannot hide in both halves at once.
"""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime, timezone
from typing import Any

import attrs

from ._ids import new_id

__all__ = [
    "DEFAULT_BUCKETS",
    "KNOWN_VERSIONS",
    "POSES",
    "STATUSES",
    "BucketLimit",
    "CharacterRecord",
    "Charge",
    "FakeTeam",
    "IdempotencyEntry",
    "RecordedRequest",
    "TokenBucket",
    "UploadRecord",
    "iso",
    "new_api_key",
    "new_team",
]

POSES = ("portrait", "front", "side", "back", "other")
SYNTH_POSES = ("portrait", "front", "side", "back")
STATUSES = ("synthesizing", "reviewing", "ready", "failed", "deleted")
ATTRIBUTE_FIELDS = (
    "gender",
    "age",
    "ethnicity",
    "hair_color",
    "hair_style",
    "eye_color",
    "body_type",
    "additional_details",
)
KNOWN_VERSIONS = frozenset({"2026-05-15"})
DEFAULT_VERSION = "2026-05-15"
IDEMPOTENCY_TTL = 24 * 3600.0
UPLOAD_TICKET_TTL = 24 * 3600.0
UPLOAD_URL_TTL = 15 * 60.0


@attrs.frozen
class BucketLimit:
    """A server bucket: ``burst`` tokens, refilled at ``per_minute`` tokens a minute."""

    per_minute: float
    burst: int


DEFAULT_BUCKETS: dict[str, BucketLimit] = {
    "characters_synthesize": BucketLimit(6, 12),
    "characters_post": BucketLimit(30, 60),
    "characters_get": BucketLimit(120, 240),
    # GET /v1/balance falls in the general GET class of /rate-limits.
    "get": BucketLimit(600, 1200),
    # The unnamed class of POST /v1/webhook_endpoints, and the test fires'.
    "webhook_endpoints_post": BucketLimit(10, 10),
    "webhooks_test": BucketLimit(30, 30),
}


class TokenBucket:
    """A server-side token bucket; atomic because the event loop runs one handler step
    at a time and ``take`` never awaits."""

    def __init__(self, limit: BucketLimit, now: float) -> None:
        self.capacity = float(limit.burst)
        self.rate = limit.per_minute / 60.0
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        """Take one token if there is one (after refilling up to ``now``)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def remaining(self) -> int:
        """Whole tokens left, as ``X-RateLimit-Remaining`` reports them."""
        return math.floor(self.tokens + 1e-9)

    def seconds_until_full(self) -> float:
        """Seconds until the bucket is full again (for ``X-RateLimit-Reset``)."""
        return (self.capacity - self.tokens) / self.rate

    def seconds_until_token(self) -> float:
        """Seconds until one whole token is back (for ``Retry-After``)."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


@attrs.define
class CharacterRecord:
    """A character as the fake stores it, with its synthesis in progress (if any)."""

    id: str
    team_id: str
    name: str
    status: str
    created_at: float
    updated_at: float
    seq: int
    attributes: dict[str, Any] | None
    # Signed URLs carry token= values, which stay out of reprs.
    refs: list[dict[str, str]] = attrs.field(repr=False)
    error_message: str | None = None
    aurous_version: str = DEFAULT_VERSION
    synthesis_done_at: float | None = None
    synthesis_outcome: str = "reviewing"
    synthesis_error: str | None = None
    synthesis_poses: tuple[str, ...] = SYNTH_POSES


@attrs.define
class UploadRecord:
    """An upload ticket and, once PUT, its bytes."""

    id: str
    team_id: str
    filename: str
    extension: str
    content_type: str
    created_at: float
    signature: str = attrs.field(repr=False)
    data: bytes | None = attrs.field(default=None, repr=False)
    consumed: bool = False


@attrs.define
class IdempotencyEntry:
    """A stored Idempotency-Key: what it was used for and, once done, the answer."""

    route: str
    body_hash: str
    created_at: float
    in_flight: bool = True
    status: int = 0
    payload: Any = None


@attrs.frozen
class Charge:
    """One paid operation the fake billed."""

    team_id: str
    character_id: str
    operation: str
    credits: float
    request_id: str


@attrs.define
class RecordedRequest:
    """One request as the fake saw it (for assertions in tests)."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    # Headers hold the API key: kept for assertions, never shown in a repr.
    headers: dict[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    request_id: str
    team_id: str | None = None
    status: int | None = None
    bucket: str | None = None
    fault: str | None = None
    replayed: bool = False
    #: When it arrived, on the fake's clock (``monotonic()``): pacing is checkable.
    at: float = 0.0

    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None


@attrs.define
class FakeTeam:
    """One team of the fake: its keys, credits, buckets, idempotency store and data."""

    id: str
    name: str
    credits: float
    # key -> scope; API keys never reach a repr.
    keys: dict[str, str] = attrs.field(factory=dict, repr=False)
    revoked_keys: set[str] = attrs.field(factory=set, repr=False)
    pinned_version: str = DEFAULT_VERSION
    buckets: dict[str, TokenBucket] = attrs.field(factory=dict, repr=False)
    idempotency: dict[str, IdempotencyEntry] = attrs.field(factory=dict, repr=False)
    characters: dict[str, CharacterRecord] = attrs.field(factory=dict, repr=False)
    uploads: dict[str, UploadRecord] = attrs.field(factory=dict, repr=False)

    @property
    def api_key(self) -> str:
        """The team's first live key."""
        for key in self.keys:
            if key not in self.revoked_keys:
                return key
        raise LookupError(f"team {self.id} has no live key")


def new_api_key() -> str:
    """A fresh key in the documented format (``al_live_`` and 64 hex digits)."""
    return "al_live_" + secrets.token_hex(32)


def iso(wall: float) -> str:
    """Unix time as the API writes timestamps (``2026-05-08T10:00:00Z``)."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_team(name: str, credits: float, wall: float) -> FakeTeam:
    """A team with a fresh ``team_`` id and no keys yet."""
    return FakeTeam(id=new_id("team", wall), name=name, credits=credits)
