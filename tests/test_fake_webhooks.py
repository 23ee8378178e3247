"""The fake's webhooks: endpoint API, signed deliveries when a synthesis ends, test
fires, retries on the fake's clock, auto-disable. A small aiohttp.web app receives the
deliveries; signatures are checked here with plain hmac, not with the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web

from aurous_async.testing import FakeAurousServer, FakeClock

from .conftest import RawClient, serve_app

DAY = 24 * 3600.0


@attrs.define
class Receiver:
    """Records each delivery; answers the next of ``answers`` (then 200)."""

    answers: list[int] = attrs.field(factory=list)
    hold: asyncio.Event | None = None
    got: list[tuple[bytes, str]] = attrs.field(factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((await request.read(), request.headers["Aurous-Webhook-Signature"]))
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.got]


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_app(app) as base:
        receiver.url = base + "/hook"
        yield receiver


def signed_with(body: bytes, header: str, secret: str) -> bool:
    """The documented check: some v1 = HMAC-SHA256(secret, "{t}.{body}")."""
    fields = [part.split("=", 1) for part in header.split(",")]
    timestamps = [value for key, value in fields if key == "t"]
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in fields if key == "v1")


async def register(raw: RawClient, url: str, events: list[str] | None = None, **extra: Any) -> dict:
    status, body, _ = await raw.call("POST", "/v1/webhook_endpoints",
                                     json={"url": url, "events": events or ["*"], **extra})
    assert status == 201, body
    return body


async def deliveries(fake: FakeAurousServer, count: int) -> list[Any]:
    # A bound, not a measurement: a delivery that never comes fails here.
    return await asyncio.wait_for(fake.wait_for_webhook_deliveries(count), 10)


async def barrier(raw: RawClient, fake: FakeAurousServer, endpoint_id: str) -> None:
    """Fire a test event at ``endpoint_id`` and wait for it: deliveries spawned before it
    (which a wrong fake would have made) have landed by then."""
    _, fire, _ = await raw.call("POST", f"/v1/webhook_endpoints/{endpoint_id}/test",
                                json={"event_type": "image.completed"})
    for _ in range(100):
        seen = await deliveries(fake, len(fake.webhook_deliveries) + 1)
        if any(d.event_id == fire["event_id"] for d in seen):
            return
    raise AssertionError("the barrier event never arrived")


async def test_endpoint_api(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: the secret shown outside create/rotate, another team reading an endpoint,
    a rotation that keeps the secret, or a delete that is not idempotent."""
    created = await register(raw, "https://example.com/hook", ["character.completed"],
                             description="ours", metadata={"env": "test"})
    assert created["secret"].startswith("whsec_") and created["id"].startswith("we_")
    assert (created["status"], created["consecutive_failures"]) == ("enabled", 0)
    assert (created["events"], created["metadata"]) == (["character.completed"], {"env": "test"})
    path = f"/v1/webhook_endpoints/{created['id']}"
    status, got, _ = await raw.call("GET", path)
    assert (status, got["secret"], got["url"]) == (200, None, "https://example.com/hook")
    other = fake.add_team()
    status, body, _ = await raw.call("GET", path, key=other.api_key)
    assert (status, body["error"]["param"]) == (404, "webhook_endpoint_id")
    status, rotated, _ = await raw.call("POST", path + "/rotate_secret")
    assert status == 200 and rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert fake.webhook_endpoint(created["id"]).secret == rotated["secret"]
    status, body, _ = await raw.call("DELETE", path, key=other.api_key)
    assert (status, body["deleted"]) == (200, False)
    status, body, _ = await raw.call("DELETE", path)
    assert (status, body) == (200, {"id": created["id"], "object": "webhook_endpoint", "deleted": True})
    status, body, _ = await raw.call("DELETE", path)
    assert (status, body["deleted"]) == (200, False)
    assert (await raw.call("GET", path))[0] == 404


async def test_endpoint_validation_and_buckets(raw: RawClient, fake: FakeAurousServer,
                                               clock: FakeClock) -> None:
    """Guards: plain http to a non-loopback host, unknown event types or oversized
    metadata accepted; webhook calls in the wrong bucket."""
    bad = [
        {"url": "http://example.com/hook", "events": ["*"]},
        {"url": "ftp://example.com/hook", "events": ["*"]},
        {"url": "https://example.com/" + "x" * 2048, "events": ["*"]},
        {"url": "https://example.com/hook", "events": []},
        {"url": "https://example.com/hook", "events": ["character.exploded"]},
        {"url": "https://example.com/hook", "events": ["*"], "metadata": {str(i): "v" for i in range(51)}},
        {"url": "https://example.com/hook", "events": ["*"], "metadata": {"k": "v" * 501}},
        {"url": "https://example.com/hook", "events": ["*"], "secret": "whsec_mine"},
    ]
    for payload in bad:
        status, body, _ = await raw.call("POST", "/v1/webhook_endpoints", json=payload)
        assert (status, body["error"]["type"]) == (400, "invalid_request"), payload
    await clock.advance(60)  # refused calls spent the bucket's 10 tokens too
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook"):
        await register(raw, url)
    status, _, headers = await raw.call("POST", "/v1/webhook_endpoints",
                                        json={"url": "https://example.com/h", "events": ["*"]})
    assert (status, headers["X-RateLimit-Limit"]) == (201, "10")
    assert fake.requests[-1].bucket == "webhook_endpoints_post"


async def test_a_synthesis_end_pushes_a_signed_event(raw: RawClient, fake: FakeAurousServer,
                                                   clock: FakeClock) -> None:
    """Guards: no event until somebody polls, an event with a bad signature, or one
    without the character at data.id."""
    async with receiving(Receiver()) as receiver, receiving(Receiver()) as other:
        endpoint = await register(raw, receiver.url, ["character.completed"])
        control = await register(raw, other.url, ["image.completed"])
        cid = fake.add_character(status="ready")
        await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
        await clock.advance(29)
        await barrier(raw, fake, control["id"])
        assert receiver.got == []
        await clock.advance(1)
        delivery = (await deliveries(fake, 2))[-1]
        body, header = receiver.got[0]
        assert signed_with(body, header, endpoint["secret"])
        assert not signed_with(body, header, "whsec_other")
        assert header.startswith(f"t={int(clock.time())},v1=")
        event = json.loads(body)
        assert (event["type"], event["synthetic"], event["object"]) == ("character.completed", False, "event")
        assert event["id"].startswith("evt_") and event["id"] == delivery.event_id
        assert (event["data"]["id"], event["data"]["status"]) == (cid, "reviewing")
        assert (delivery.attempt, delivery.status, delivery.ok) == (1, 200, True)
        # Pushed by the fake's clock: nobody asked for the character after the POST.
        assert fake.requests_to("GET /v1/characters/{character_id}") == []


async def test_failed_synthesis_and_subscriptions(raw: RawClient, fake: FakeAurousServer,
                                                 clock: FakeClock) -> None:
    """Guards: a failure sent as completed, or events reaching endpoints that did not
    subscribe to them or belong to another team."""
    async with receiving(Receiver()) as everything, receiving(Receiver()) as images, \
            receiving(Receiver()) as theirs:
        await register(raw, everything.url, ["*"])
        image_endpoint = await register(raw, images.url, ["image.completed"])
        other = fake.add_team()
        status, _, _ = await raw.call("POST", "/v1/webhook_endpoints", key=other.api_key,
                                      json={"url": theirs.url, "events": ["*"]})
        assert status == 201
        cid = fake.add_character(status="ready")
        fake.fail_next_synthesis(cid, "provider exploded")
        await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
        await clock.advance(30)
        await deliveries(fake, 1)
        await barrier(raw, fake, image_endpoint["id"])
        (event,) = everything.events()
        assert (event["type"], event["data"]["error_message"]) == ("character.failed", "provider exploded")
        assert [e["synthetic"] for e in images.events()] == [True]  # the barrier's only
        assert theirs.got == []


async def test_an_endpoint_registered_mid_synthesis_still_hears_its_end(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Guards: syntheses started before the endpoint existed ending unannounced."""
    cid = fake.add_character(status="ready")
    await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    await clock.advance(10)
    async with receiving(Receiver()) as receiver:
        await register(raw, receiver.url)
        await clock.advance(20)
        await deliveries(fake, 1)
        assert receiver.events()[0]["data"]["id"] == cid


async def test_test_fire_is_synthetic(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: test fires without synthetic: true, or with another event id than the
    one the API answered."""
    async with receiving(Receiver()) as receiver:
        endpoint = await register(raw, receiver.url, ["image.completed"])
        path = f"/v1/webhook_endpoints/{endpoint['id']}/test"
        status, fire, headers = await raw.call("POST", path, json={"event_type": "character.completed"})
        assert status == 200 and headers["X-RateLimit-Limit"] == "30"
        assert (fire["object"], fire["endpoint_id"], fire["enqueued"]) == (
            "webhook_test_fire", endpoint["id"], True)
        await deliveries(fake, 1)
        (event,) = receiver.events()
        assert (event["id"], event["type"], event["synthetic"]) == (fire["event_id"], "character.completed", True)
        assert event["data"]["id"].startswith("char_")
        for body in ({}, {"event_type": "character.exploded"}):
            status, error, _ = await raw.call("POST", path, json=body)
            assert (status, error["error"]["param"]) == (400, "event_type")


async def test_failed_deliveries_are_retried_with_backoff_on_the_fakes_clock(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Guards: no retry, retries on real time instead of the fake's clock, or a success
    that does not reset consecutive_failures."""
    async with receiving(Receiver(answers=[500, 503])) as receiver:
        endpoint = await register(raw, receiver.url)
        await raw.call("POST", f"/v1/webhook_endpoints/{endpoint['id']}/test",
                       json={"event_type": "image.completed"})
        await deliveries(fake, 1)
        await clock.advance(4.5)
        assert len(fake.webhook_deliveries) == 1
        assert fake.webhook_endpoint(endpoint["id"]).consecutive_failures == 1
        await clock.advance(0.5)
        await deliveries(fake, 2)
        await clock.advance(9.5)
        assert len(fake.webhook_deliveries) == 2
        assert fake.webhook_endpoint(endpoint["id"]).consecutive_failures == 2
        await clock.advance(0.5)
        attempts = await deliveries(fake, 3)
        assert [(d.attempt, d.status) for d in attempts] == [(1, 500), (2, 503), (3, 200)]
        assert len({d.event_id for d in attempts}) == 1
        assert fake.webhook_endpoint(endpoint["id"]).consecutive_failures == 0


async def fail_events(raw: RawClient, fake: FakeAurousServer, clock: FakeClock, path: str,
                      events: int, attempts: int) -> None:
    """Test-fire ``events`` events one after another, letting each make ``attempts``
    attempts (every retry waits at most an hour)."""
    for _ in range(events):
        start = len(fake.webhook_deliveries)
        await raw.call("POST", path + "/test", json={"event_type": "image.failed"})
        for n in range(1, attempts + 1):
            await deliveries(fake, start + n)
            await clock.advance(3600)


async def test_failures_disable_an_endpoint_only_after_a_day_without_success(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Guards: an endpoint failing for ever without being disabled, disabled despite a
    success in the last 24 h, or disabled without telling the team's other endpoints."""
    async with receiving(Receiver(answers=[200] + [500] * 100)) as failing, \
            receiving(Receiver()) as watcher:
        endpoint = await register(raw, failing.url)
        await register(raw, watcher.url, ["webhook.endpoint_disabled"])
        path = f"/v1/webhook_endpoints/{endpoint['id']}"
        await fail_events(raw, fake, clock, path, events=1, attempts=1)  # the success
        await fail_events(raw, fake, clock, path, events=2, attempts=12)
        record = fake.webhook_endpoint(endpoint["id"])
        assert (record.consecutive_failures, record.status) == (24, "enabled")
        await clock.advance(DAY)
        await fail_events(raw, fake, clock, path, events=1, attempts=1)
        assert (record.consecutive_failures, record.status) == (25, "disabled")
        await deliveries(fake, 27)
        (notice,) = watcher.events()
        assert (notice["type"], notice["data"]["id"]) == ("webhook.endpoint_disabled", endpoint["id"])
        status, got, _ = await raw.call("GET", path)
        assert (got["status"], got["consecutive_failures"]) == ("disabled", 25)
        status, fire, _ = await raw.call("POST", path + "/test", json={"event_type": "image.failed"})
        assert (status, fire["enqueued"]) == (200, False)
        assert len(failing.got) == 26


async def test_a_never_answered_endpoint_is_disabled_at_twenty(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Guards: failures counted past 20 for an endpoint that never succeeded, and
    retries going on once it is disabled."""
    async with receiving(Receiver(answers=[500] * 100)) as failing:
        endpoint = await register(raw, failing.url)
        path = f"/v1/webhook_endpoints/{endpoint['id']}"
        await fail_events(raw, fake, clock, path, events=1, attempts=12)
        await fail_events(raw, fake, clock, path, events=1, attempts=8)
        record = fake.webhook_endpoint(endpoint["id"])
        assert (record.consecutive_failures, record.status) == (20, "disabled")
        await clock.advance(DAY)
        assert len(fake.webhook_deliveries) == 20 and len(failing.got) == 20


async def test_deliveries_never_hold_up_requests(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: a slow receiver delaying the API's answers."""
    release = asyncio.Event()
    async with receiving(Receiver(hold=release)) as receiver:
        try:
            endpoint = await register(raw, receiver.url)
            path = f"/v1/webhook_endpoints/{endpoint['id']}/test"
            # Bounds, not measurements: a request waiting on the receiver never returns.
            status, _, _ = await asyncio.wait_for(
                raw.call("POST", path, json={"event_type": "image.completed"}), 5)
            assert status == 200
            for _ in range(1000):  # a bound on polls: the receiver has the delivery in hand
                if receiver.got:
                    break
                await asyncio.sleep(0.005)
            assert receiver.got
            assert (await asyncio.wait_for(raw.call("GET", "/v1/balance"), 5))[0] == 200
            assert fake.webhook_deliveries == []  # still waiting for the receiver
        finally:
            release.set()
        assert (await deliveries(fake, 1))[0].status == 200


async def test_rotation_signs_with_both_secrets_for_a_day(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Guards: receivers still holding the old secret failing every delivery right
    after a rotation, or the old secret signing for ever."""
    async with receiving(Receiver()) as receiver:
        old = await register(raw, receiver.url)
        path = f"/v1/webhook_endpoints/{old['id']}"
        _, new, _ = await raw.call("POST", path + "/rotate_secret")
        await raw.call("POST", path + "/test", json={"event_type": "image.completed"})
        await deliveries(fake, 1)
        body, header = receiver.got[0]
        assert header.count("v1=") == 2
        assert signed_with(body, header, new["secret"]) and signed_with(body, header, old["secret"])
        await clock.advance(DAY)
        await raw.call("POST", path + "/test", json={"event_type": "image.completed"})
        await deliveries(fake, 2)
        body, header = receiver.got[1]
        assert signed_with(body, header, new["secret"]) and not signed_with(body, header, old["secret"])


async def test_deleting_an_endpoint_stops_its_retries(raw: RawClient, fake: FakeAurousServer,
                                                      clock: FakeClock) -> None:
    """Guards: deliveries retried to an endpoint that no longer exists."""
    async with receiving(Receiver(answers=[500] * 5)) as receiver, receiving(Receiver()) as other:
        endpoint = await register(raw, receiver.url)
        control = await register(raw, other.url)
        path = f"/v1/webhook_endpoints/{endpoint['id']}"
        await raw.call("POST", path + "/test", json={"event_type": "image.completed"})
        await deliveries(fake, 1)
        await raw.call("DELETE", path)
        await clock.advance(3600)
        await barrier(raw, fake, control["id"])
        assert len(receiver.got) == 1
        assert [d.endpoint_id for d in fake.webhook_deliveries].count(endpoint["id"]) == 1


async def test_control_api_lists_deliveries_and_reprs_hide_secrets(
    raw: RawClient, fake: FakeAurousServer
) -> None:
    """Guards: deliveries missing from the control API, or a whsec_ secret or a
    signature in a repr."""
    async with receiving(Receiver(answers=[502])) as receiver:
        endpoint = await register(raw, receiver.url)
        await raw.call("POST", f"/v1/webhook_endpoints/{endpoint['id']}/test",
                       json={"event_type": "video.failed"})
        (delivery,) = await deliveries(fake, 1)
        async with raw.http.get(fake.base_url + "/_fake/webhook_deliveries") as response:
            listed = (await response.json())["data"]
        assert [(d["endpoint_id"], d["event_type"], d["status"], d["attempt"], d["synthetic"])
                for d in listed] == [(endpoint["id"], "video.failed", 502, 1, True)]
        assert listed[0]["event"]["id"] == delivery.event_id
        assert "whsec_" not in json.dumps(listed)
        shown = repr(fake.webhook_endpoint(endpoint["id"])) + repr(delivery)
        assert endpoint["secret"] not in shown and "whsec_" not in shown
        assert delivery.signature not in shown
