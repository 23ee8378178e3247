"""``WebhookEndpoints``: create / get / rotate_secret / test / delete against a small
loopback app that answers as api-spec.md §3.3 documents."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import aurous_async as aa
from aurous_async.resources.webhook_endpoints import WebhookEndpoints
from aurous_async.webhooks import EventType, WebhookEndpoint

from .conftest import serve_app

KEY = "al_live_" + "ab" * 32


class Api:
    """The webhook-endpoint routes, recording every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.secrets = (f"whsec_{n:032d}" for n in itertools.count(1))
        self.delete_body_has_id = True

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_post("/v1/webhook_endpoints", self.create)
        app.router.add_get("/v1/webhook_endpoints/{id}", self.get)
        app.router.add_post("/v1/webhook_endpoints/{id}/rotate_secret", self.rotate)
        app.router.add_post("/v1/webhook_endpoints/{id}/test", self.test)
        app.router.add_delete("/v1/webhook_endpoints/{id}", self.delete)
        return app

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.raw_path, body))
        if request.headers.get("X-Api-Key") != KEY:
            return self.error(401, "invalid_api_key")
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def error(status: int, code: str) -> web.Response:
        return web.json_response({"error": {"type": "invalid_request", "code": code,
                                            "message": code.replace("_", " ")}}, status=status)

    def found(self, request: web.Request) -> dict[str, Any] | None:
        return self.endpoints.get(request.match_info["id"])

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["url"].endswith("/echo"):  # a server that quotes a secret back in an error
            secret = next(self.secrets)
            return web.json_response({"error": {
                "type": "invalid_request", "code": "url_unreachable", "param": secret,
                "message": f"could not reach the url with {secret}"}}, status=400)
        endpoint = {"id": f"we_{len(self.endpoints) + 1}", "object": "webhook_endpoint",
                    "url": body["url"], "events": body["events"],
                    "description": body.get("description"), "metadata": body.get("metadata", {}),
                    "status": "enabled", "consecutive_failures": 0,
                    "created_at": "2026-05-08T10:00:00Z", "livemode": True}
        self.endpoints[endpoint["id"]] = endpoint
        return web.json_response({**endpoint, "secret": next(self.secrets)}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        endpoint = self.found(request)
        if endpoint is None:
            return self.error(404, "resource_missing")
        return web.json_response({**endpoint, "secret": None})

    async def rotate(self, request: web.Request) -> web.Response:
        endpoint = self.found(request)
        if endpoint is None:
            return self.error(404, "resource_missing")
        return web.json_response({**endpoint, "secret": next(self.secrets)})

    async def test(self, request: web.Request) -> web.Response:
        if self.found(request) is None:
            return self.error(404, "resource_missing")
        return web.json_response({"object": "webhook_test_fire", "enqueued": True,
                                  "endpoint_id": request.match_info["id"], "event_id": "evt_7"})

    async def delete(self, request: web.Request) -> web.Response:
        deleted = self.endpoints.pop(request.match_info["id"], None) is not None
        body: dict[str, Any] = {"object": "webhook_endpoint", "deleted": deleted}
        if self.delete_body_has_id:
            body["id"] = request.match_info["id"]
        return web.json_response(body)


class Buckets:
    """A rate limiter that only records which bucket each attempt took a token from."""

    def __init__(self) -> None:
        self.taken: list[str] = []

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        self.taken.append(bucket)

    def observe(self, bucket: str, feedback: aa.RateLimitFeedback) -> None:
        pass

    def release(self, bucket: str) -> None:
        pass


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def buckets() -> Buckets:
    return Buckets()


@pytest.fixture
async def endpoints(api: Api, buckets: Buckets) -> AsyncIterator[WebhookEndpoints]:
    async with serve_app(api.app()) as base, \
            aa.AurousSession(KEY, base_url=base, rate_limits=buckets, max_retries=0) as s:
        # Until the session exposes s.webhook_endpoints, build the resource on its transport.
        yield WebhookEndpoints(s._parts.transport)


async def test_create_sends_the_documented_body(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: wrong method, path or field names in the registration."""
    created = await endpoints.create(
        "https://example.com/hook", events=[EventType.CHARACTER_COMPLETED, "character.failed"],
        description="prod", metadata={"team": "render"},
    )
    assert api.requests == [("POST", "/v1/webhook_endpoints", {
        "url": "https://example.com/hook", "events": ["character.completed", "character.failed"],
        "description": "prod", "metadata": {"team": "render"}})]
    assert isinstance(created, WebhookEndpoint)
    assert (created.id, created.url, created.events) == (
        "we_1", "https://example.com/hook", ("character.completed", "character.failed"))
    assert (created.description, created.metadata) == ("prod", {"team": "render"})
    assert (created.status, created.consecutive_failures) == ("enabled", 0)
    assert created.created_at is not None and created.request_id is None
    assert created.secret == "whsec_" + "0" * 31 + "1"


async def test_optional_fields_are_left_out(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: ``null`` description/metadata sent where the caller gave none."""
    await endpoints.create("http://127.0.0.1:9/hook", events=["*"])
    assert api.requests[0][2] == {"url": "http://127.0.0.1:9/hook", "events": ["*"]}


async def test_secret_only_on_create_and_rotate(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: a rotated secret not returned, or the answers of get mixed up with it."""
    created = await endpoints.create("https://example.com/hook", events=["*"])
    fetched = await endpoints.get(created.id)
    rotated = await endpoints.rotate_secret(created.id)
    assert fetched.secret is None and fetched.id == created.id
    assert rotated.secret is not None and rotated.secret.startswith("whsec_")
    assert rotated.secret != created.secret
    assert [r[:2] for r in api.requests[1:]] == [
        ("GET", "/v1/webhook_endpoints/we_1"),
        ("POST", "/v1/webhook_endpoints/we_1/rotate_secret")]


async def test_secrets_never_show_in_reprs_or_logs(
    endpoints: WebhookEndpoints, caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards: a ``whsec_`` value in ``repr``/``str`` of an endpoint, or in a log line."""
    caplog.set_level(logging.DEBUG)
    created = await endpoints.create("https://example.com/hook", events=["*"])
    rotated = await endpoints.rotate_secret(created.id)
    text = repr(created) + str(created) + repr(rotated) + str(rotated) + caplog.text
    assert created.secret and rotated.secret
    assert created.secret not in text and rotated.secret not in text
    assert "whsec_…" in repr(created)


async def test_a_secret_quoted_in_an_error_is_redacted(
    endpoints: WebhookEndpoints, caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards: a ``whsec_`` value reaching exception text, attributes or logs."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(aa.InvalidRequestError) as info:
        await endpoints.create("https://example.com/echo", events=["*"])
    error = info.value
    text = " ".join(map(str, (error, repr(error), error.message, error.param, error.body,
                              caplog.text)))
    assert "whsec_" + "0" * 31 + "1" not in text
    assert "whsec_…" in error.message


async def test_test_fire(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: the test fire sent to the wrong path or without its event type."""
    created = await endpoints.create("https://example.com/hook", events=["*"])
    fire = await endpoints.test(created.id, EventType.CHARACTER_FAILED)
    assert api.requests[-1] == ("POST", "/v1/webhook_endpoints/we_1/test",
                                {"event_type": "character.failed"})
    assert (fire.endpoint_id, fire.event_id, fire.enqueued) == ("we_1", "evt_7", True)


async def test_delete_is_idempotent(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: a repeat delete raising, or a body without ``id`` failing to decode."""
    created = await endpoints.create("https://example.com/hook", events=["*"])
    first = await endpoints.delete(created.id)
    api.delete_body_has_id = False
    again = await endpoints.delete(created.id)
    assert (first.id, first.deleted) == ("we_1", True)
    assert (again.id, again.deleted) == ("we_1", False)
    assert api.requests[-1][:2] == ("DELETE", "/v1/webhook_endpoints/we_1")


async def test_unknown_endpoint_is_not_found(endpoints: WebhookEndpoints) -> None:
    """Guards: a 404 surfacing as anything but NotFoundError."""
    for call in (endpoints.get("we_404"), endpoints.rotate_secret("we_404"),
                 endpoints.test("we_404", "image.completed")):
        with pytest.raises(aa.NotFoundError):
            await call


async def test_ids_stay_one_path_segment(endpoints: WebhookEndpoints, api: Api) -> None:
    """Guards: an id such as ``../x`` or ``a/b?c`` escaping ``/v1/webhook_endpoints/{id}``."""
    for bad in ("../characters", "a/b?c"):
        with pytest.raises(aa.NotFoundError):
            await endpoints.get(bad)
    assert [r[1] for r in api.requests] == [
        "/v1/webhook_endpoints/..%2Fcharacters", "/v1/webhook_endpoints/a%2Fb%3Fc"]


async def test_each_call_takes_its_documented_bucket(
    endpoints: WebhookEndpoints, buckets: Buckets,
) -> None:
    """Guards: webhook calls drawing on another bucket (the GET one for writes, say)."""
    created = await endpoints.create("https://example.com/hook", events=["*"])
    await endpoints.get(created.id)
    await endpoints.rotate_secret(created.id)
    await endpoints.test(created.id, "image.completed")
    await endpoints.delete(created.id)
    assert buckets.taken == ["webhook_endpoints_post", "get", "webhook_endpoints_post",
                             "webhooks_test", "webhook_endpoints_post"]


async def test_a_malformed_answer_is_a_malformed_response_error(
    endpoints: WebhookEndpoints, api: Api,
) -> None:
    """Guards: an answer without the endpoint's fields returned as a half-built value."""
    api.endpoints["we_x"] = {"url": 5}
    with pytest.raises(aa.MalformedResponseError):
        await endpoints.get("we_x")


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    ((b"https://x",), {"events": ["*"]}, TypeError),
    (("http://example.com/hook",), {"events": ["*"]}, ValueError),
    (("ftp://example.com/hook",), {"events": ["*"]}, ValueError),
    (("/hook",), {"events": ["*"]}, ValueError),
    (("https://",), {"events": ["*"]}, ValueError),
    (("https://x.com/" + "a" * 2040,), {"events": ["*"]}, ValueError),
    (("https://x.com/h",), {"events": "character.completed"}, TypeError),
    (("https://x.com/h",), {"events": []}, ValueError),
    (("https://x.com/h",), {"events": ["*", 3]}, TypeError),
    (("https://x.com/h",), {"events": [""]}, ValueError),
    (("https://x.com/h",), {"events": ["*"], "description": 5}, TypeError),
    (("https://x.com/h",), {"events": ["*"], "metadata": ["a"]}, TypeError),
    (("https://x.com/h",), {"events": ["*"], "metadata": {"a": 1}}, TypeError),
    (("https://x.com/h",), {"events": ["*"], "metadata": {"a": "x" * 501}}, ValueError),
    (("https://x.com/h",), {"events": ["*"], "metadata": {str(i): "" for i in range(51)}},
     ValueError),
])
async def test_create_checks_arguments_before_sending(
    endpoints: WebhookEndpoints, api: Api, args: tuple[Any, ...], kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    """Guards: invalid registrations sent to the API (costing a 10/min token)."""
    with pytest.raises(error):
        await endpoints.create(*args, **kwargs)
    assert api.requests == []


@pytest.mark.parametrize(("method", "args", "error"), [
    ("get", (None,), TypeError), ("get", ("",), ValueError), ("delete", ("..",), ValueError),
    ("rotate_secret", (5,), TypeError), ("test", ("we_1", None), TypeError),
    ("test", ("we_1", ""), ValueError), ("test", ("", "image.completed"), ValueError),
])
async def test_ids_and_event_types_checked_before_sending(
    endpoints: WebhookEndpoints, api: Api, method: str, args: tuple[Any, ...],
    error: type[Exception],
) -> None:
    """Guards: a missing id or event type turned into a request."""
    with pytest.raises(error):
        await getattr(endpoints, method)(*args)
    assert api.requests == []


def test_limits_accept_the_documented_maximums() -> None:
    """Guards: off-by-one limits refusing a 2048-character URL or 50 metadata keys."""
    from aurous_async.resources.webhook_endpoints import _metadata, _url

    url = "https://x.com/" + "a" * (2048 - len("https://x.com/"))
    assert _url(url) == url
    assert len(_metadata({str(i): "v" * 500 for i in range(50)})) == 50
