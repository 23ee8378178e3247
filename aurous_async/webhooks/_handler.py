"""Receiving deliveries: verify, answer at once, then run the callback once per event.

The API waits at most 10 s for a 2xx and retries anything else, so the receiver answers
before any user code runs, and remembers recent event ids so a retried delivery (its
2xx lost on the way back, say) runs nothing twice.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from aiohttp import web

from .._clock import SYSTEM_CLOCK, Clock
from .._validate import integer
from ._models import WebhookEvent, WebhookVerificationError
from ._verify import SIGNATURE_HEADER, check_secrets, check_tolerance, verify_with_keys

__all__ = ["MAX_BODY_SIZE", "REMEMBERED_EVENTS", "EventSink", "WebhookReceiver",
           "aiohttp_handler"]

logger = logging.getLogger("aurous_async")

#: Deliveries larger than this are refused with 413 before being read in full.
MAX_BODY_SIZE = 1 << 20
#: How many recent event ids are remembered to drop redeliveries.
REMEMBERED_EVENTS = 10_000

#: ``on_event``: a function or a coroutine function taking the event.
EventCallback = Callable[[WebhookEvent], object]


@runtime_checkable
class EventSink(Protocol):
    """Where verified events are fed: an ``AurousSession``, whose ``feed`` wakes the
    watchers of the event's character (and returns whether it woke one)."""

    def feed(self, event: WebhookEvent) -> bool: ...


class _RecentIds:
    """The ``size`` most recently seen event ids; the least recent is forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; false when it was already remembered."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class WebhookReceiver:
    """Verifies deliveries and runs ``on_event`` (sync or async) once per event id,
    after the delivery was acknowledged, and feeds each event to ``session`` if given.

    ``secret`` is one ``whsec_…`` secret or several (during a rotation). ``clock``
    gives the time signatures are checked against (default: the system clock).
    :meth:`handle` is the ``aiohttp.web`` handler; :meth:`deliver` serves any other
    framework. A sync ``on_event`` runs on the event loop: keep it quick, or make it
    ``async``. Exceptions from ``on_event`` and ``session.feed`` are logged, never
    raised. :meth:`aclose` waits for callbacks still running.

    ::

        receiver = aa.webhooks.WebhookReceiver(secret, on_event=handle_event, session=s)
        app.router.add_post("/webhooks/aurous", receiver.handle)
    """

    def __init__(
        self,
        secret: str | Sequence[str],
        on_event: EventCallback | None = None,
        *,
        session: EventSink | None = None,
        tolerance: float = 300.0,
        clock: Clock | None = None,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        self._keys = check_secrets(secret)
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable, not {type(on_event).__name__}")
        if session is not None and not isinstance(session, EventSink):
            raise TypeError("session must have a feed(event) method, e.g. an AurousSession")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, not {type(clock).__name__}")
        self._on_event = on_event
        self._session = session
        self._tolerance = check_tolerance(tolerance)
        expect = getattr(session, "expect_webhooks", None)
        if callable(expect):
            expect()  # deliveries will come: the session's watchers may poll less
        # A session's clock is the one its API (or fake) signs deliveries with.
        session_clock = getattr(session, "clock", None)
        self._clock = clock or (session_clock if isinstance(session_clock, Clock)
                                else SYSTEM_CLOCK)
        self._max_body_size = integer(max_body_size, "max_body_size", minimum=1)
        self._seen = _RecentIds(REMEMBERED_EVENTS)
        # Strong references: the event loop keeps only weak ones to tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        """How many event callbacks are still running."""
        return len(self._tasks)

    def _accept(self, payload: bytes, signature: str | None) -> WebhookEvent | None:
        event = verify_with_keys(payload, signature, self._keys, self._tolerance,
                                 self._clock.time())
        if not self._seen.add(event.id):
            logger.debug("webhook event %s delivered again; dropped", event.id)
            return None
        logger.debug("webhook event %s (%s) accepted", event.id, event.type)
        return event

    def _spawn(self, event: WebhookEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._dispatch(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, event: WebhookEvent) -> None:
        if self._session is not None:
            try:
                self._session.feed(event)
            except Exception:
                logger.exception("session.feed failed for webhook event %s", event.id)
        if self._on_event is not None:
            try:
                result = self._on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_event failed for webhook event %s (%s)",
                                 event.id, event.type)

    def deliver(self, payload: bytes | bytearray | memoryview, signature: str | None
                ) -> WebhookEvent | None:
        """For frameworks other than aiohttp: verify one delivery (its raw body and
        ``Aurous-Webhook-Signature`` header) and schedule its callbacks. Returns the
        event, or ``None`` for a redelivery of one already seen. Raises
        :class:`WebhookVerificationError` (answer 400) or, once closed,
        ``RuntimeError`` (answer 503). Answer 2xx right after it returns."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if signature is not None and not isinstance(signature, str):
            raise TypeError(f"signature must be a str or None, not {type(signature).__name__}")
        if self._closed:
            raise RuntimeError("this WebhookReceiver is closed")
        event = self._accept(bytes(payload), signature)
        if event is not None:
            self._spawn(event)
        return event

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The ``aiohttp.web`` handler: 200 for a verified delivery (sent before the
        callbacks run), 400 for a bad signature, 413 past ``max_body_size``, 503 once
        closed (the API retries later)."""
        if self._closed:
            return web.json_response({"error": "closed"}, status=503)
        size = request.content_length
        try:
            if size is not None and size > self._max_body_size:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=self._max_body_size, actual_size=size)
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:
            logger.warning("webhook delivery from %s refused: body over %d bytes",
                           request.remote, self._max_body_size)
            return web.json_response({"error": "payload_too_large"}, status=413)
        if len(payload) > self._max_body_size:
            logger.warning("webhook delivery from %s refused: body over %d bytes",
                           request.remote, self._max_body_size)
            return web.json_response({"error": "payload_too_large"}, status=413)
        try:
            event = self._accept(payload, request.headers.get(SIGNATURE_HEADER))
        except WebhookVerificationError as exc:
            logger.warning("webhook delivery from %s refused (%s): %s",
                           request.remote, exc.reason, exc)
            return web.json_response(
                {"error": "invalid_signature", "reason": exc.reason}, status=400)
        response = web.json_response({"received": True, "duplicate": event is None})
        try:
            # Send the 2xx first: a slow callback must not make the API time out and
            # retry.
            await response.prepare(request)
            await response.write_eof()
        finally:
            # Even when the answer could not be sent: the event is already remembered,
            # so its redelivery would be dropped.
            if event is not None:
                self._spawn(event)
        return response

    async def aclose(self) -> None:
        """Refuse further deliveries (503, so the API retries them elsewhere or later)
        and wait for the callbacks still running."""
        self._closed = True
        # A delivery read before the close may still add a task: loop until none is left.
        while self._tasks:
            running = list(self._tasks)
            await asyncio.gather(*running, return_exceptions=True)
            # Explicitly: gather over finished tasks may return without yielding to the
            # loop (Python 3.12+), before their done callbacks could discard them.
            self._tasks.difference_update(running)


def aiohttp_handler(
    secret: str | Sequence[str],
    on_event: EventCallback | None = None,
    *,
    session: EventSink | None = None,
    tolerance: float = 300.0,
    clock: Clock | None = None,
    max_body_size: int = MAX_BODY_SIZE,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An ``aiohttp.web`` handler for webhook deliveries (see :class:`WebhookReceiver`;
    build one yourself to :meth:`~WebhookReceiver.aclose` it on shutdown).

    ::

        app.router.add_post("/webhooks/aurous", aa.webhooks.aiohttp_handler(
            os.environ["AUROUS_WEBHOOK_SECRET"], on_event=handle_event, session=s))
    """
    return WebhookReceiver(secret, on_event, session=session, tolerance=tolerance,
                           clock=clock, max_body_size=max_body_size).handle
