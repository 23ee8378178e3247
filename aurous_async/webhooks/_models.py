"""Webhook value classes: the verified event, the endpoint, and the verification error.

Deliveries are a JSON envelope (api-spec.md §5) of which only ``synthetic`` is documented;
the rest follows the API's other objects::

    {"id": "evt_…", "object": "event", "type": "character.completed",
     "created_at": "2026-05-08T10:00:00Z", "data": {"id": "char_…", …}, "synthetic": false}

An envelope needs a string ``id`` (redeliveries are recognised by it) and a string
``type``; everything else is read leniently, because a receiver that rejects a delivery
makes the API retry it and, after 20 failures, disable the endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from .._convert import converter
from .._errors import AurousError
from .._models import _OpenStrEnum
from .._redact import redact, redact_url

__all__ = [
    "DeletedWebhookEndpoint",
    "EventType",
    "VerificationFailure",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookTestFire",
    "WebhookVerificationError",
    "event_from_envelope",
]

#: Why a delivery failed verification.
VerificationFailure = Literal["missing", "malformed", "expired", "mismatch"]


class WebhookVerificationError(AurousError, ValueError):
    """A webhook delivery failed verification; answer it with HTTP 400.

    ``reason`` is ``"missing"`` (no signature header), ``"malformed"`` (a header, or a
    signed payload, that cannot be read), ``"expired"`` (a valid signature whose
    timestamp is outside the tolerance: a replay, or a clock off by minutes) or
    ``"mismatch"`` (no ``v1`` signature matches any secret). The message never holds the
    secret or the payload.

    >>> WebhookVerificationError("no signature header", reason="missing").reason
    'missing'
    """

    def __init__(self, message: str, *, reason: VerificationFailure) -> None:
        super().__init__(message)
        self.reason: VerificationFailure = reason

    def __repr__(self) -> str:
        return f"WebhookVerificationError(reason={self.reason!r}, message={str(self)!r})"


class EventType(_OpenStrEnum):
    """A webhook event type (api-spec.md §5); unknown types are kept, not rejected.

    >>> EventType("character.completed") is EventType.CHARACTER_COMPLETED
    True
    >>> EventType("character.archived").is_known
    False
    """

    IMAGE_COMPLETED = "image.completed"
    IMAGE_FAILED = "image.failed"
    IMAGE_CANCELLED = "image.cancelled"
    VIDEO_COMPLETED = "video.completed"
    VIDEO_FAILED = "video.failed"
    VIDEO_CANCELLED = "video.cancelled"
    USAGE_BALANCE_LOW = "usage.balance_low"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"
    CHARACTER_COMPLETED = "character.completed"
    CHARACTER_FAILED = "character.failed"
    CHARACTER_CANCELLED = "character.cancelled"


def _safe_repr(value: object) -> str:
    # Event data can hold signed output URLs, API keys or whsec_ secrets.
    return redact(repr(value))


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """A verified webhook event.

    ``data`` is the event's object as delivered (its shape is undocumented for
    ``character.*`` events, so treat it as a hint and fetch the resource for its state);
    ``synthetic`` is true for test fires; ``extra`` keeps top-level fields this SDK does
    not read (and any it could not read), so nothing the server sent is lost.

    >>> event = WebhookEvent(id="evt_1", type=EventType("character.failed"),
    ...                      data={"id": "char_1"})
    >>> event.character_id
    'char_1'
    """

    id: str
    type: EventType
    created_at: datetime | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, repr=_safe_repr)
    synthetic: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=_safe_repr)

    @property
    def character_id(self) -> str | None:
        """The character a ``character.*`` event is about (``data["id"]``), else
        ``None``."""
        if not self.type.value.startswith("character."):
            return None
        character_id = self.data.get("id")
        return character_id if isinstance(character_id, str) else None


def _timestamp(value: object) -> datetime | None:
    """``created_at`` as ISO-8601 or Unix seconds; ``None`` when unreadable."""
    if isinstance(value, str):
        try:
            parsed: datetime = converter.structure(value, datetime)
        except (TypeError, ValueError):
            return None
        return parsed
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def event_from_envelope(envelope: object) -> WebhookEvent:
    """Read a parsed delivery body; ``ValueError`` names what makes it unusable."""
    if not isinstance(envelope, dict):
        raise ValueError(f"the payload is a JSON {type(envelope).__name__}, not an object")
    extra = dict(envelope)
    event_id = extra.pop("id", None)
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("the event has no string id")
    # The per-request image callbacks name the type "event"; endpoint deliveries "type".
    type_key = "type" if "type" in extra else "event"
    event_type = extra.pop(type_key, None)
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("the event has no string type")
    data = extra.pop("data", None)
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ValueError(f"the event's data is a JSON {type(data).__name__}, not an object")
    created_at = None
    for key in ("created_at", "created"):
        if key in extra:
            created_at = _timestamp(extra[key])
            if created_at is not None:
                del extra[key]
                break
    synthetic = extra.get("synthetic", False)
    if isinstance(synthetic, bool):
        extra.pop("synthetic", None)
    return WebhookEvent(
        id=event_id, type=EventType(event_type), created_at=created_at, data=data,
        synthetic=synthetic is True, extra=extra,
    )


def _secret_repr(secret: str | None) -> str:
    if secret is None:
        return "None"
    return repr("whsec_…" if secret.startswith("whsec_") else "…")


@attrs.frozen(kw_only=True)
class WebhookEndpoint:
    """A registered webhook endpoint.

    ``secret`` (``whsec_…``) is only set on the answers of ``create`` and
    ``rotate_secret`` (``get`` never returns it): store it then. It never shows in
    ``repr`` or ``str``. ``events`` may be ``("*",)`` for every event type.
    """

    id: str
    url: str = attrs.field(repr=lambda url: repr(redact_url(url)))
    events: tuple[str, ...] = ()
    description: str | None = None
    metadata: Mapping[str, str] | None = attrs.field(default=None, repr=_safe_repr)
    status: str | None = None
    consecutive_failures: int | None = None
    created_at: datetime | None = None
    secret: str | None = attrs.field(default=None, repr=_secret_repr)
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class WebhookTestFire:
    """A queued synthetic delivery: ``event_id`` is the id the test event will carry."""

    endpoint_id: str
    event_id: str
    enqueued: bool
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class DeletedWebhookEndpoint:
    """The answer to a delete: ``deleted`` is false when there was nothing to remove."""

    id: str
    deleted: bool
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)
