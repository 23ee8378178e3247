"""``session.webhook_endpoints``: register, read, rotate, test-fire and delete the
endpoints the API delivers signed events to (api-spec.md §3.3, §5).

Rate-limit buckets (api-spec.md §2.8): GETs share the ``get`` bucket; a test fire uses
the documented ``webhooks_test`` bucket; registering uses the unnamed 10/min class of
``POST /v1/webhook_endpoints``, called ``webhook_endpoints_post`` here, which rotation
and deletion (no bucket documented) share as the other writes to the same resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from yarl import URL

from .._config import is_loopback
from .._transport import ApiCall, Transport
from .._validate import path_id
from ..webhooks._models import DeletedWebhookEndpoint, WebhookEndpoint, WebhookTestFire

__all__ = ["WebhookEndpoints"]

_PATH = "/v1/webhook_endpoints"
_MAX_URL = 2048
_MAX_METADATA_KEYS = 50
_MAX_METADATA_VALUE = 500


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"url must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= _MAX_URL:
        raise ValueError(f"url must be 1-{_MAX_URL} characters")
    try:
        parsed = URL(value)
    except (TypeError, ValueError):
        raise ValueError("url is not a valid URL") from None
    host = parsed.host or ""
    if not host or not parsed.is_absolute():
        raise ValueError("url must be an absolute URL with a host")
    # The API takes https only; plain http is for a loopback receiver (the fake server).
    if parsed.scheme != "https" and not (parsed.scheme == "http" and is_loopback(host)):
        raise ValueError("url must use https (http only for a loopback host)")
    return value


def _events(value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError("events must be a sequence of event types (or [\"*\"] for all)")
    events = list(value)
    if not events:
        raise ValueError("events must not be empty (use [\"*\"] for every event type)")
    for event in events:
        if not isinstance(event, str):
            raise TypeError(f"each event type must be a str, not {type(event).__name__}")
        if not event:
            raise ValueError("an event type must not be empty")
    return events


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, not {type(value).__name__}")
    if len(value) > _MAX_METADATA_KEYS:
        raise ValueError(f"metadata holds at most {_MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError("metadata keys and values must be str")
        if len(item) > _MAX_METADATA_VALUE:
            raise ValueError(f"metadata[{key!r}] is over {_MAX_METADATA_VALUE} characters")
    return dict(value)


class WebhookEndpoints:
    """``session.webhook_endpoints``: where the API sends signed events.

    ::

        endpoint = await s.webhook_endpoints.create(
            "https://example.com/webhooks/aurous",
            events=["character.completed", "character.failed"],
        )
        save_secret(endpoint.secret)       # shown once: get() never returns it
        await s.webhook_endpoints.test(endpoint.id, "character.completed")
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def _endpoint(self, call: ApiCall) -> WebhookEndpoint:
        return (await self._transport.request(call)).into(WebhookEndpoint)

    async def create(
        self,
        url: str,
        *,
        events: Sequence[str],
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> WebhookEndpoint:
        """Register ``url`` (https, at most 2048 characters) for ``events``
        (:class:`EventType` values, or ``["*"]`` for all). ``metadata`` holds at most 50
        keys, each value at most 500 characters. The answer's ``secret`` (``whsec_…``)
        is the only time the secret is returned."""
        body: dict[str, Any] = {"url": _url(url), "events": _events(events)}
        if description is not None:
            if not isinstance(description, str):
                raise TypeError(f"description must be a str, not {type(description).__name__}")
            body["description"] = description
        if metadata is not None:
            body["metadata"] = _metadata(metadata)
        return await self._endpoint(ApiCall(
            method="POST", path=_PATH, bucket="webhook_endpoints_post", json=body,
        ))

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        """The endpoint now (its ``secret`` is always ``None``)."""
        return await self._endpoint(ApiCall(
            method="GET", path=f"{_PATH}/{path_id(endpoint_id, 'endpoint_id')}", bucket="get",
        ))

    async def rotate_secret(self, endpoint_id: str) -> WebhookEndpoint:
        """Issue a new signing secret, returned once in the answer's ``secret``. Verify
        with both secrets (``secret=[new, old]``) until deliveries signed with the old
        one have drained."""
        return await self._endpoint(ApiCall(
            method="POST", path=f"{_PATH}/{path_id(endpoint_id, 'endpoint_id')}/rotate_secret",
            bucket="webhook_endpoints_post",
        ))

    async def test(self, endpoint_id: str, event_type: str) -> WebhookTestFire:
        """Queue a synthetic delivery of ``event_type`` (``synthetic: true`` on its
        envelope) to the endpoint."""
        path = f"{_PATH}/{path_id(endpoint_id, 'endpoint_id')}/test"
        if not isinstance(event_type, str):
            raise TypeError(f"event_type must be a str, not {type(event_type).__name__}")
        if not event_type:
            raise ValueError("event_type must not be empty")
        response = await self._transport.request(ApiCall(
            method="POST", path=path, bucket="webhooks_test",
            json={"event_type": event_type},
        ))
        return response.into(WebhookTestFire)

    async def delete(self, endpoint_id: str) -> DeletedWebhookEndpoint:
        """Delete the endpoint. Idempotent: the API answers 200 even when there was
        nothing to delete, with ``deleted`` false."""
        path = f"{_PATH}/{path_id(endpoint_id, 'endpoint_id')}"
        response = await self._transport.request(ApiCall(
            method="DELETE", path=path, bucket="webhook_endpoints_post",
        ))
        if isinstance(response.data, dict) and "id" not in response.data:
            # The body only promises to say whether something was removed.
            response = attrs.evolve(response, data={**response.data, "id": endpoint_id})
        return response.into(DeletedWebhookEndpoint)
