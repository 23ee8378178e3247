"""``AurousSession``: settings, lifecycle, and the parts every call shares."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from types import TracebackType

import aiohttp
import attrs

from ._clock import SYSTEM_CLOCK, Clock
from ._config import Config, build_config
from ._errors import SessionClosedError
from ._http import DEFAULT_MAX_RESPONSE_BYTES, HttpClient
from ._models import Balance
from ._parts import SessionParts
from ._polling import PollPolicy, PollScheduler
from ._ratelimit import (
    RateLimiter,
    RateLimits,
    adapt_limiter,
    estimated_wait,
    shared_limiter,
)
from ._redact import key_hint
from ._transport import ApiCall, Transport
from ._validate import check_headers, integer
from ._watch import BackgroundSaves
from .resources._raw import WithRawResponse
from .resources.characters import (
    Characters,
    get_character,
    save_character,
)
from .resources.webhook_endpoints import WebhookEndpoints
from .webhooks import WebhookEvent

__all__ = ["AurousSession"]

#: Connections per session: enough for a wide fan-out without flooding one host.
DEFAULT_CONNECTION_LIMIT = 100


class AurousSession:
    """An async session with the Aurous API. Use it as an async context manager, or
    call :meth:`aclose` when done::

        async with aurous_async.AurousSession() as s:     # key from $AUROUS_API_KEY
            character = await s.characters.get("char_01HX…")

    ``rate_limits`` takes the bucket sizes to keep to (the documented ones by default,
    shared by every session of this process with the same key and base URL), your own
    :class:`RateLimiter` (e.g. :class:`RedisRateLimiter`), or ``None`` to switch client
    pacing off. ``http_session`` lets you bring an :class:`aiohttp.ClientSession`; it is
    then yours to close. ``clock`` makes time injectable (tests run on a
    :class:`ScaledClock` or :class:`FakeClock`). ``max_response_bytes`` caps a response
    body after decompression (8 MiB by default); a larger one raises
    :class:`MalformedResponseError` with code ``response_too_large``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        aurous_version: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        rate_limits: RateLimits | RateLimiter | None = RateLimits(),  # noqa: B008 - frozen
        poll: PollPolicy = PollPolicy(),  # noqa: B008 - frozen value
        http_session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        default_headers: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._config = build_config(api_key, base_url, aurous_version, timeout, max_retries,
                                    allow_insecure_http=allow_insecure_http)
        headers = check_headers(default_headers, "default_headers")
        if not isinstance(poll, PollPolicy):
            raise TypeError("poll must be a PollPolicy")
        if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
            raise TypeError("http_session must be an aiohttp.ClientSession")
        integer(connection_limit, "connection_limit", minimum=1)
        integer(max_response_bytes, "max_response_bytes", minimum=1024)
        self.poll = poll
        self.clock: Clock = clock or SYSTEM_CLOCK
        limiter: RateLimiter | None = None
        if isinstance(rate_limits, RateLimits):
            limiter = shared_limiter(self._config.api_key, self._config.base_url, rate_limits,
                                     self.clock)
        elif rate_limits is not None:
            limiter = adapt_limiter(rate_limits)
        self._closed = False
        self._owner = True  # a with_options() view shares its parent's parts, owns none
        self._default_headers = headers
        # Knowing whether a request went out only matters for giving tokens back.
        http = HttpClient(connection_limit=connection_limit, traced=limiter is not None,
                          session=http_session, max_response_bytes=max_response_bytes)
        transport = Transport(self._config, clock=self.clock, limiter=limiter, http=http,
                              default_headers=headers)
        scheduler = PollScheduler(functools.partial(get_character, transport), poll, self.clock,
                                  max_in_flight=min(32, connection_limit))
        saves = BackgroundSaves(scheduler, functools.partial(save_character, transport),
                                self.clock)
        self._parts = SessionParts(
            transport=transport, http=http, clock=self.clock, scheduler=scheduler, saves=saves,
            connection_limit=connection_limit,
        )
        self.characters = Characters(self._parts)
        self.webhook_endpoints = WebhookEndpoints(transport)
        #: ``balance`` answering a :class:`RawResponse` (see ``characters.with_raw_response``).
        self.with_raw_response = WithRawResponse(self, frozenset({"balance"}))

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> AurousSession:
        """A view of this session with other settings for the calls made through it. It
        shares the connection pool, the rate limiter and the poll scheduler (polls keep
        this session's settings), and closing it closes nothing: close this session.

        ::

            patient = s.with_options(timeout=300, max_retries=8)
            hero = await patient.characters.get(character_id)
        """
        view = copy.copy(self)
        view._rebind(self._config.with_options(timeout=timeout, max_retries=max_retries),
                     {**(self._default_headers or {}),
                      **(check_headers(default_headers, "default_headers") or {})})
        return view

    def _rebind(self, config: Config, headers: dict[str, str]) -> None:
        """Make this copy a view: its own settings over its parent's parts."""
        self._owner = False
        self._config, self._default_headers = config, headers
        parts = self._parts
        transport = Transport(config, clock=self.clock, limiter=parts.limiter,
                              http=parts.http, default_headers=headers)
        self._parts = attrs.evolve(parts, transport=transport)
        self.characters = Characters(self._parts)
        self.webhook_endpoints = WebhookEndpoints(transport)
        self.with_raw_response = WithRawResponse(self, frozenset({"balance"}))

    @property
    def timeout(self) -> float:
        """Seconds per attempt of each call (``timeout=``, ``$AUROUS_TIMEOUT`` or 60)."""
        return self._config.timeout

    @property
    def max_retries(self) -> int:
        """Retries of each call (``max_retries=``, ``$AUROUS_MAX_RETRIES`` or 3)."""
        return self._config.max_retries

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter in use (``None`` when pacing is off)."""
        return self._parts.limiter

    def estimated_wait(self, bucket: str = "characters_synthesize") -> float | None:
        """Seconds a call of ``bucket`` made now would wait for its rate-limit token (0
        when one is there or pacing is off; ``None`` when the limiter cannot tell), so
        a queued caller can say so.

        ::

            wait = s.estimated_wait("characters_synthesize")
        """
        return estimated_wait(self._parts.limiter, bucket)

    @property
    def polls_sent(self) -> int:
        """GETs the session's poll scheduler has sent (for progress displays)."""
        return self._parts.scheduler.polls_sent

    @property
    def watched(self) -> int:
        """How many characters are being watched now."""
        return self._parts.scheduler.watched

    def feed(self, event: WebhookEvent) -> bool:
        """Hand this session a verified webhook event: a ``character.*`` event for a
        character being watched makes the session poll it now (one GET confirms the state;
        the event's payload is not trusted for it). While events keep arriving, watchers
        poll only every ``PollPolicy.max_interval`` as a safety net. Returns True when it
        woke a watcher.

        ::

            event = aa.webhooks.verify(body, signature, secret)
            s.feed(event)
        """
        if not isinstance(event, WebhookEvent):
            raise TypeError(f"feed takes a WebhookEvent, not {type(event).__name__}")
        character_id = event.character_id
        if character_id is None:
            return False
        return self._parts.scheduler.push(character_id)

    def expect_webhooks(self) -> None:
        """Say that verified webhook events will be fed to this session (a
        ``WebhookReceiver(session=s)`` says so itself): watchers then poll only as a safety
        net (every 2 minutes) for the next 10 minutes, renewed by every event fed, so a
        pushed fan-out spends about one GET per character from its very first one."""
        self._parts.scheduler.expect_pushes()

    async def balance(self) -> Balance:
        """The team's credit balance.

        ::

            print((await s.balance()).available_credits)
        """
        response = await self._parts.transport.request(
            ApiCall(method="GET", path="/v1/balance", bucket="get")
        )
        return response.into(Balance)

    async def aclose(self) -> None:
        """End every flow and queued call of this session (they raise
        :class:`SessionClosedError`) and close the HTTP connections it opened (not a
        session you brought)."""
        if self._closed:
            return
        self._closed = True
        if not self._owner:
            return  # a view: its parent owns the parts
        parts = self._parts
        parts.transport.close()
        for stop in list(parts.batches):
            stop()
        await parts.saves.aclose()
        await parts.scheduler.aclose()
        await parts.http.aclose()

    async def __aenter__(self) -> AurousSession:
        if self._closed:
            raise SessionClosedError("this AurousSession is closed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"AurousSession(base_url={self._config.base_url!r}, "
                f"api_key={key_hint(self._config.api_key)!r})")
