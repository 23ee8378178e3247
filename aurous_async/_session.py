"""``AurousSession``: settings, lifecycle, and the parts every call shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

import aiohttp

from ._clock import SYSTEM_CLOCK, Clock
from ._config import build_config
from ._errors import SessionClosedError
from ._models import Balance
from ._polling import PollPolicy, PollScheduler
from ._ratelimit import RateLimiter, RateLimits, shared_limiter
from ._redact import key_hint
from ._transport import ApiCall, Transport, send_tracer
from .resources.characters import Characters

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
    :class:`ScaledClock` or :class:`FakeClock`).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        aurous_version: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        rate_limits: RateLimits | RateLimiter | None = RateLimits(),  # noqa: B008 - frozen
        poll: PollPolicy = PollPolicy(),  # noqa: B008 - frozen value
        http_session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    ) -> None:
        self._config = build_config(api_key, base_url, aurous_version, timeout, max_retries)
        if rate_limits is not None and not isinstance(rate_limits, (RateLimits, RateLimiter)):
            raise TypeError("rate_limits must be a RateLimits, a RateLimiter or None")
        if not isinstance(poll, PollPolicy):
            raise TypeError("poll must be a PollPolicy")
        if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
            raise TypeError("http_session must be an aiohttp.ClientSession")
        if isinstance(connection_limit, bool) or not isinstance(connection_limit, int) \
                or connection_limit < 1:
            raise ValueError("connection_limit must be an int >= 1")
        self.poll = poll
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._rate_limits = rate_limits
        self._limiter: RateLimiter | None = (
            rate_limits if rate_limits is not None and not isinstance(rate_limits, RateLimits)
            else None
        )
        self._http: aiohttp.ClientSession | None = http_session
        self._owns_http = http_session is None
        self._connection_limit = connection_limit
        self._closed = False
        # Running resynthesize_many batches: aclose() ends each through its callback.
        self._batches: set[Callable[[], None]] = set()
        # Knowing whether a request went out only matters for giving tokens back.
        self._traced = self._owns_http and rate_limits is not None
        self._transport = Transport(self._config, clock=self.clock, limiter=self._get_limiter,
                                    http=self._http_session, traced=self._traced)
        self.characters = Characters(self)
        self._scheduler = PollScheduler(self.characters.get, poll, self.clock,
                                        max_in_flight=min(32, connection_limit))

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter in use (``None`` when pacing is off)."""
        return self._get_limiter()

    def _get_limiter(self) -> RateLimiter | None:
        if self._limiter is None and isinstance(self._rate_limits, RateLimits):
            # Bound lazily: the shared limiter belongs to the running event loop.
            self._limiter = shared_limiter(self._config.api_key, self._config.base_url,
                                           self._rate_limits, self.clock)
        return self._limiter

    def _http_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SessionClosedError("this AurousSession is closed")
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._connection_limit,
                                             limit_per_host=self._connection_limit)
            self._http = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                trace_configs=[send_tracer()] if self._traced else None,
            )
            if hasattr(self._http, "_retry_connection"):
                # aiohttp silently resends GET/DELETE once when a kept-alive connection
                # drops. Our transport retries on its own terms (a token per attempt, no
                # blind DELETE resend), so switch that off in sessions we own.
                self._http._retry_connection = False
        return self._http

    async def balance(self) -> Balance:
        """The team's credit balance.

        ::

            print((await s.balance()).available_credits)
        """
        response = await self._transport.request(
            ApiCall(method="GET", path="/v1/balance", bucket="get")
        )
        return response.into(Balance)

    async def aclose(self) -> None:
        """Close the HTTP connections this session opened (not a session you brought)."""
        if self._closed:
            return
        self._closed = True
        for stop in list(self._batches):
            stop()
        await self._scheduler.aclose()
        if self._http is not None and self._owns_http:
            await self._http.close()
            # Let aiohttp finish closing transports so no "unclosed" warning follows.
            await asyncio.sleep(0)

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
