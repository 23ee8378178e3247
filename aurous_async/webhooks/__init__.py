"""``aurous_async.webhooks``: verify signed deliveries, and receive them with aiohttp.

::

    import aurous_async as aa

    event = aa.webhooks.verify(raw_body, headers.get("Aurous-Webhook-Signature"), secret)
    if event.type is aa.EventType.CHARACTER_COMPLETED:
        print("done:", event.character_id)

    app.router.add_post("/webhooks/aurous", aa.webhooks.aiohttp_handler(secret, on_event))

The receiver (:func:`aiohttp_handler`, :class:`WebhookReceiver`) is imported on first
use, so ``import aurous_async`` does not load ``aiohttp.web``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._models import (
    DeletedWebhookEndpoint,
    EventType,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTestFire,
    WebhookVerificationError,
)
from ._verify import SIGNATURE_HEADER, verify

if TYPE_CHECKING:
    from ._handler import EventSink, WebhookReceiver, aiohttp_handler

__all__ = [
    "SIGNATURE_HEADER",
    "DeletedWebhookEndpoint",
    "EventSink",
    "EventType",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookTestFire",
    "WebhookVerificationError",
    "aiohttp_handler",
    "verify",
]

_LAZY = frozenset({"EventSink", "WebhookReceiver", "aiohttp_handler"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _handler

        return getattr(_handler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
