"""The fake's webhooks: registered endpoints and signed deliveries, as the API docs
describe them.

When a synthesis ends, every enabled endpoint of the team subscribed to the event gets
a ``character.completed`` (the character reached ``reviewing`` or ``ready``) or
``character.failed`` event; a test fire sends a ``synthetic: true`` event to one
endpoint. The envelope::

    {"id": "evt_…", "object": "event", "type": "character.completed",
     "created_at": "2026-05-08T10:00:45Z", "data": {<the character>}, "synthetic": false}

is POSTed with ``Aurous-Webhook-Signature: t=<unix>,v1=<hex>``, ``v1`` being
HMAC-SHA256 over ``"{t}.{raw body}"`` keyed with the endpoint's ``whsec_`` secret (a
second ``v1`` with the previous secret for 24 h after a rotation). ``t`` is the fake
clock's Unix time. A delivery is a 2xx answer within 10 real seconds; a failed one is
retried after 5, 10, 20, … API seconds (at most an hour apart, :data:`MAX_ATTEMPTS`
attempts in all). Each failure counts in the endpoint's ``consecutive_failures``, a
success resets it, and :data:`DISABLE_AFTER` failures in a row with no success in 24 h
disable the endpoint (and send ``webhook.endpoint_disabled`` to the team's others).

Deliveries run as tasks on the fake's event loop, so they never hold up a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import attrs

from .._clock import TimerHandle
from ._ids import new_id
from ._records import CharacterRecord, iso
from ._state import FakeState

__all__ = ["DISABLE_AFTER", "MAX_ATTEMPTS", "WebhookDelivery", "WebhookEndpointRecord", "Webhooks"]

#: Consecutive failures (with no success in 24 h) that disable an endpoint.
DISABLE_AFTER = 20
#: Attempts per event and endpoint, the first included.
MAX_ATTEMPTS = 12
#: The first retry waits this many API seconds; each next one twice as long ...
RETRY_FIRST = 5.0
#: ... up to this.
RETRY_CAP = 3600.0
#: Real seconds a receiver has to answer.
DELIVERY_TIMEOUT = 10.0
#: API seconds during which deliveries are also signed with the secret a rotation replaced.
ROTATION_GRACE = 24 * 3600.0
_DAY = 24 * 3600.0


@attrs.define
class WebhookEndpointRecord:
    """A registered endpoint and its delivery health."""

    id: str
    team_id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    metadata: dict[str, str]
    created_at: float
    secret: str = attrs.field(repr=False)
    status: str = "enabled"
    consecutive_failures: int = 0
    last_success_at: float | None = None
    previous_secret: str | None = attrs.field(default=None, repr=False)
    previous_secret_until: float = 0.0

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribed to ``event_type``."""
        return "*" in self.events or event_type in self.events


@attrs.frozen
class WebhookDelivery:
    """One delivery attempt, as the fake made it (for assertions in tests)."""

    endpoint_id: str
    event_id: str
    event_type: str
    #: 1 for the first attempt of this event to this endpoint.
    attempt: int
    #: The receiver's HTTP status, or ``None`` when it never answered.
    status: int | None
    #: Why the receiver never answered (``None`` when it did).
    error: str | None
    synthetic: bool
    #: The fake clock's Unix time of the attempt.
    delivered_at: float
    body: bytes = attrs.field(repr=False)
    signature: str = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        """The delivered event envelope."""
        return json.loads(self.body)


def new_secret() -> str:
    """A fresh signing secret (``whsec_…``)."""
    return "whsec_" + secrets.token_urlsafe(32)


def retry_delay(attempt: int) -> float:
    """API seconds to wait after failed attempt number ``attempt``."""
    return min(RETRY_FIRST * 2.0 ** (attempt - 1), RETRY_CAP)


class Webhooks:
    """The endpoints of every team and the deliveries to them, for one fake server."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.endpoints: dict[str, WebhookEndpointRecord] = {}
        #: Every delivery attempt, in order.
        self.deliveries: list[WebhookDelivery] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, TimerHandle] = {}
        self._delivered: asyncio.Event | None = None
        state.listeners.append(self)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running loop: deliveries and timers run there."""
        self._loop = asyncio.get_running_loop()
        self._delivered = asyncio.Event()

    async def stop(self) -> None:
        """Cancel pending deliveries and timers; close the delivery connections."""
        self._loop = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop deliveries run on (``None`` while the server is stopped)."""
        return self._loop

    async def wait_for(self, count: int) -> list[WebhookDelivery]:
        """Wait (on the fake's loop) until ``count`` attempts were made in all."""
        while len(self.deliveries) < count:
            if self._delivered is None:
                raise RuntimeError("the fake server is not running")
            self._delivered.clear()
            await self._delivered.wait()
        return list(self.deliveries)

    # -- endpoints ---------------------------------------------------------------------

    def create(self, team_id: str, url: str, events: tuple[str, ...],
               description: str | None, metadata: dict[str, str]) -> WebhookEndpointRecord:
        """Register an endpoint; syntheses already running will be reported to it."""
        endpoint = WebhookEndpointRecord(
            id=new_id("we", self.state.clock.time()), team_id=team_id, url=url, events=events,
            description=description, metadata=metadata, created_at=self.state.clock.time(),
            secret=new_secret(),
        )
        self.endpoints[endpoint.id] = endpoint
        for record in list(self.state.team(team_id).characters.values()):
            self.synthesis_started(record)
        return endpoint

    def find(self, team_id: str, endpoint_id: str) -> WebhookEndpointRecord | None:
        """The team's endpoint (``None`` for unknown ids and other teams' endpoints)."""
        endpoint = self.endpoints.get(endpoint_id)
        return endpoint if endpoint is not None and endpoint.team_id == team_id else None

    def rotate_secret(self, endpoint: WebhookEndpointRecord) -> None:
        """A new secret; the old one still signs deliveries for 24 API hours."""
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = self.state.clock.monotonic() + ROTATION_GRACE
        endpoint.secret = new_secret()

    def delete(self, endpoint: WebhookEndpointRecord) -> None:
        """Remove an endpoint: its pending retries stop."""
        self.endpoints.pop(endpoint.id, None)
        endpoint.status = "deleted"

    def render(self, endpoint: WebhookEndpointRecord, *,
               with_secret: bool = False) -> dict[str, Any]:
        """The endpoint as the API returns it (the secret only when asked)."""
        return {
            "id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
            "events": list(endpoint.events), "description": endpoint.description,
            "metadata": dict(endpoint.metadata), "status": endpoint.status,
            "consecutive_failures": endpoint.consecutive_failures,
            "created_at": iso(endpoint.created_at),
            "secret": endpoint.secret if with_secret else None,
        }

    # -- events ------------------------------------------------------------------------

    def synthesis_started(self, record: CharacterRecord) -> None:
        """Arm a timer for the synthesis's end when anyone of the team listens, so the
        event goes out when the synthesis ends, not when someone next looks."""
        if record.status != "synthesizing" or record.synthesis_done_at is None:
            return
        if not any(e.team_id == record.team_id for e in self.endpoints.values()):
            return
        done_at = record.synthesis_done_at

        def arm() -> None:
            previous = self._timers.pop(record.id, None)
            if previous is not None:
                previous.cancel()
            delay = done_at - self.state.clock.monotonic()
            self._timers[record.id] = self.state.clock.call_later(delay, settle)

        def settle() -> None:
            self._timers.pop(record.id, None)
            self.state.settle(record)

        self._on_loop(arm)

    def synthesis_ended(self, record: CharacterRecord) -> None:
        """Send ``character.completed`` or ``character.failed``."""
        event_type = "character.failed" if record.status == "failed" else "character.completed"
        self.emit(record.team_id, event_type, self.state.render(record))

    def emit(self, team_id: str, event_type: str, data: dict[str, Any], *,
             to: WebhookEndpointRecord | None = None, synthetic: bool = False) -> str:
        """Send an event to ``to``, or to every enabled endpoint of the team that wants
        it; returns the event id."""
        clock = self.state.clock
        event_id = new_id("evt", clock.time())
        targets = [to] if to is not None else [
            e for e in self.endpoints.values()
            if e.team_id == team_id and e.status == "enabled" and e.wants(event_type)]
        if not targets:
            return event_id
        body = json.dumps({"id": event_id, "object": "event", "type": event_type,
                           "created_at": iso(clock.time()), "data": data,
                           "synthetic": synthetic}, separators=(",", ":")).encode()
        for endpoint in targets:
            self._on_loop(self._spawner(endpoint, event_id, event_type, body, synthetic))
        return event_id

    # -- delivery ----------------------------------------------------------------------

    def _on_loop(self, action: Callable[[], None]) -> None:
        # State changes may come from a test's own thread (run_in_thread set-up calls):
        # timers and tasks belong to the server's loop.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            action()
        else:
            loop.call_soon_threadsafe(action)

    def _spawner(self, endpoint: WebhookEndpointRecord, event_id: str, event_type: str,
                 body: bytes, synthetic: bool) -> Callable[[], None]:
        def spawn() -> None:
            if self._loop is None:
                return
            task = asyncio.ensure_future(
                self._deliver(endpoint, event_id, event_type, body, synthetic))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return spawn

    async def _deliver(self, endpoint: WebhookEndpointRecord, event_id: str, event_type: str,
                       body: bytes, synthetic: bool) -> None:
        clock = self.state.clock
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if endpoint.status != "enabled":
                return
            sent_at = clock.time()
            signature = self._signature(endpoint, int(sent_at), body)
            status, error = await self._post(endpoint.url, body, signature)
            delivery = WebhookDelivery(endpoint.id, event_id, event_type, attempt, status, error,
                                       synthetic, sent_at, body, signature)
            self.deliveries.append(delivery)
            if self._delivered is not None:
                self._delivered.set()
            if delivery.ok:
                endpoint.consecutive_failures = 0
                endpoint.last_success_at = clock.monotonic()
                return
            endpoint.consecutive_failures += 1
            if self._should_disable(endpoint):
                self._disable(endpoint)
                return
            if attempt < MAX_ATTEMPTS:
                await clock.sleep(retry_delay(attempt))

    def _signature(self, endpoint: WebhookEndpointRecord, timestamp: int, body: bytes) -> str:
        signed = f"{timestamp}.".encode() + body
        keys = [endpoint.secret]
        if endpoint.previous_secret is not None \
                and self.state.clock.monotonic() < endpoint.previous_secret_until:
            keys.append(endpoint.previous_secret)
        parts = [f"t={timestamp}"]
        parts += [f"v1={hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()}"
                  for key in keys]
        return ",".join(parts)

    async def _post(self, url: str, body: bytes, signature: str) -> tuple[int | None, str | None]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json", "Aurous-Webhook-Signature": signature,
                   "User-Agent": "AurousWebhooks/fake"}
        try:
            async with self._http.post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT),
            ) as response:
                await response.read()
                return response.status, None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return None, type(exc).__name__

    def _should_disable(self, endpoint: WebhookEndpointRecord) -> bool:
        if endpoint.status != "enabled" or endpoint.consecutive_failures < DISABLE_AFTER:
            return False
        last = endpoint.last_success_at
        return last is None or self.state.clock.monotonic() - last >= _DAY

    def _disable(self, endpoint: WebhookEndpointRecord) -> None:
        endpoint.status = "disabled"
        self.emit(endpoint.team_id, "webhook.endpoint_disabled", self.render(endpoint))
