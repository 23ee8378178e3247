"""The fake's webhook endpoint routes: create, get, rotate the secret, test-fire and
delete, with the validation the API docs give (https URLs of at most 2048 characters —
plain ``http://`` to a loopback host is allowed on the fake, for receivers in tests —
``events`` from the documented types or ``["*"]``, and at most 50 metadata keys of at
most 500 characters each)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from ._errors import invalid, not_found
from ._ids import new_id
from ._pipeline import Ctx, Route
from ._webhooks import WebhookEndpointRecord, Webhooks

__all__ = ["EVENT_TYPES", "WEBHOOK_ROUTE_NAMES", "webhook_routes"]

#: The documented v1.0 events, and the character events of the test-fire page.
EVENT_TYPES = (
    "image.completed", "image.failed", "image.cancelled",
    "video.completed", "video.failed", "video.cancelled",
    "usage.balance_low", "webhook.endpoint_disabled",
    "character.completed", "character.failed", "character.cancelled",
)
MAX_URL_LENGTH = 2048
MAX_METADATA_KEYS = 50
MAX_METADATA_VALUE = 500
# A test fire's data: a fresh id of the event's kind, and the kind's object name.
_SAMPLES = {"image": ("img", "image"), "video": ("vid", "video"), "usage": ("team", "balance"),
            "webhook": ("we", "webhook_endpoint"), "character": ("char", "character")}

_WebhookHandler = Callable[[Webhooks, Ctx], Awaitable[tuple[int, Any]]]


async def _create(webhooks: Webhooks, ctx: Ctx) -> tuple[int, Any]:
    body = ctx.body
    if not isinstance(body, dict):
        raise invalid("invalid_format", "The request body must be a JSON object.")
    rejected = [key for key in body if key not in ("url", "events", "description", "metadata")]
    if rejected:
        raise invalid("invalid_request", "Unknown fields: " + ", ".join(rejected) + ".",
                      rejected[0])
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid("invalid_format", "description must be a string.", "description")
    endpoint = webhooks.create(ctx.team.id, _url(body.get("url")), _events(body.get("events")),
                               description, _metadata(body.get("metadata")))
    return 201, webhooks.render(endpoint, with_secret=True)


async def _get(webhooks: Webhooks, ctx: Ctx) -> tuple[int, Any]:
    return 200, webhooks.render(_find(webhooks, ctx))


async def _rotate_secret(webhooks: Webhooks, ctx: Ctx) -> tuple[int, Any]:
    endpoint = _find(webhooks, ctx)
    webhooks.rotate_secret(endpoint)
    return 200, webhooks.render(endpoint, with_secret=True)


async def _test(webhooks: Webhooks, ctx: Ctx) -> tuple[int, Any]:
    endpoint = _find(webhooks, ctx)
    body = ctx.body
    event_type = body.get("event_type") if isinstance(body, dict) else None
    if event_type is None:
        raise invalid("missing_field", "event_type is required.", "event_type")
    if event_type not in EVENT_TYPES:
        raise invalid("invalid_format", f"event_type must be one of {', '.join(EVENT_TYPES)}.",
                      "event_type")
    enqueued = endpoint.status == "enabled"
    if enqueued:
        prefix, kind = _SAMPLES[event_type.partition(".")[0]]
        data = {"id": new_id(prefix, ctx.state.clock.time()), "object": kind}
        event_id = webhooks.emit(ctx.team.id, event_type, data, to=endpoint, synthetic=True)
    else:
        event_id = new_id("evt", ctx.state.clock.time())
    return 200, {"object": "webhook_test_fire", "endpoint_id": endpoint.id,
                 "event_id": event_id, "enqueued": enqueued}


async def _delete(webhooks: Webhooks, ctx: Ctx) -> tuple[int, Any]:
    endpoint_id = ctx.request.match_info["webhook_endpoint_id"]
    endpoint = webhooks.find(ctx.team.id, endpoint_id)
    if endpoint is not None:
        webhooks.delete(endpoint)
    # Idempotent: always 200, saying whether anything was removed.
    return 200, {"id": endpoint_id, "object": "webhook_endpoint", "deleted": endpoint is not None}


_ENDPOINT = "/v1/webhook_endpoints/{webhook_endpoint_id}"
_TABLE: tuple[tuple[str, str, _WebhookHandler, str], ...] = (
    # Registering is the unnamed 10/min class of the rate-limit docs; rotation and
    # deletion (no class documented) write the same resource, so they share it.
    ("POST", "/v1/webhook_endpoints", _create, "webhook_endpoints_post"),
    ("GET", _ENDPOINT, _get, "get"),
    ("POST", _ENDPOINT + "/rotate_secret", _rotate_secret, "webhook_endpoints_post"),
    ("POST", _ENDPOINT + "/test", _test, "webhooks_test"),
    ("DELETE", _ENDPOINT, _delete, "webhook_endpoints_post"),
)

#: ``"METHOD /path/template"`` of every webhook route.
WEBHOOK_ROUTE_NAMES = frozenset(f"{method} {path}" for method, path, _, _ in _TABLE)


def webhook_routes(webhooks: Webhooks) -> tuple[Route, ...]:
    """The webhook endpoint routes, served from ``webhooks``."""
    return tuple(Route(method, path, functools.partial(handler, webhooks), bucket)
                 for method, path, handler, bucket in _TABLE)


def _find(webhooks: Webhooks, ctx: Ctx) -> WebhookEndpointRecord:
    endpoint = webhooks.find(ctx.team.id, ctx.request.match_info["webhook_endpoint_id"])
    if endpoint is None:
        raise not_found("webhook_endpoint_id", "webhook endpoint")
    return endpoint


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise invalid("missing_field", "url is required.", "url")
    if len(value) > MAX_URL_LENGTH:
        raise invalid("invalid_format", f"url is longer than {MAX_URL_LENGTH} characters.", "url")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        raise invalid("invalid_format", "url is not a valid URL.", "url") from None
    if not host or not (parts.scheme == "https"
                        or (parts.scheme == "http" and is_loopback(host))):
        raise invalid("invalid_format", "url must be an https URL (http only to a loopback "
                      "host on this fake).", "url")
    return value


def is_loopback(host: str) -> bool:
    """``localhost`` and loopback addresses: the hosts the fake lets use ``http://``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        raise invalid("invalid_format", "events must be a non-empty array of event types "
                      "(or [\"*\"]).", "events")
    unknown = [e for e in value if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise invalid("invalid_format", f"Unknown event type {unknown[0]!r}.", "events")
    return tuple(value)


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise invalid("invalid_format", f"metadata must be an object of at most "
                      f"{MAX_METADATA_KEYS} keys.", "metadata")
    for key, item in value.items():
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise invalid("invalid_format", f"metadata values must be strings of at most "
                          f"{MAX_METADATA_VALUE} characters.", f"metadata.{key}")
    return dict(value)
