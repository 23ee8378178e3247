"""The fake Aurous server: the characters surface of the API docs over real HTTP.

It keeps the rules that matter to a client — auth, versions, the error envelope, token
buckets, idempotency, the character lifecycle and its credits — and lets a test switch
on faults. Time comes from an injectable clock, so synthesis that takes 45 s and buckets
that refill 6 tokens a minute can play out in milliseconds.

This module holds the lifecycle and the public control API; the request pipeline is in
:mod:`._pipeline`, the state and its rules in :mod:`._state`, the handlers in
:mod:`._handlers`, and the same control API over HTTP (``/_fake/``) in :mod:`._control`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from aiohttp import web

from .._clock import Clock, ScaledClock, SystemClock
from ._control import ControlApi
from ._faults import FaultPlan
from ._handlers import ROUTES, storage_routes
from ._pipeline import Pipeline
from ._records import DEFAULT_VERSION, BucketLimit, Charge, FakeTeam, RecordedRequest
from ._state import FakeState
from ._webhook_handlers import WEBHOOK_ROUTE_NAMES, webhook_routes
from ._webhooks import WebhookDelivery, WebhookEndpointRecord, Webhooks

if TYPE_CHECKING:
    from .. import AurousSession

__all__ = ["FakeAurousServer"]

_T = TypeVar("_T")


class _OnState(Generic[_T]):
    """A server attribute kept on its :class:`FakeState`, so that a test changing it
    between requests changes what the handlers see."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, server: None, owner: type) -> _OnState[_T]: ...

    @overload
    def __get__(self, server: FakeAurousServer, owner: type) -> _T: ...

    def __get__(self, server: FakeAurousServer | None, owner: type) -> _OnState[_T] | _T:
        if server is None:
            return self
        value: _T = getattr(server._state, self.name)
        return value

    def __set__(self, server: FakeAurousServer, value: _T) -> None:
        setattr(server._state, self.name, value)


class FakeAurousServer:
    """An in-process Aurous API on a free loopback port.

    Use it as an async context manager; ``base_url`` and ``api_key`` are then set::

        async with FakeAurousServer(time_scale=60) as fake:
            async with aiohttp.ClientSession() as http:
                r = await http.get(f"{fake.base_url}/v1/balance",
                                   headers={"X-Api-Key": fake.api_key})

    ``clock`` (or ``time_scale``, shorthand for ``ScaledClock(time_scale)``) drives
    synthesis, buckets, timestamps and idempotency expiry. ``synthesis_seconds`` is how
    long a synthesis takes in API time, spread by ±``synthesis_jitter`` (a fraction).
    ``buckets`` overrides bucket limits by name.
    ``insufficient_credits_code`` and ``rate_limit_header_prefix`` pick between the
    documented spellings (``"balance_too_low"``, ``"RateLimit-"``) so clients can be
    tested against both.

    Webhook endpoints registered through the API receive signed events when a
    synthesis ends (see :mod:`._webhooks`); :attr:`webhook_deliveries` lists every
    attempt and :meth:`wait_for_webhook_deliveries` waits for them.
    """

    #: Every API route by name (``"METHOD /path/template"``), as faults name them.
    route_names: frozenset[str] = frozenset(route.name for route in ROUTES) | WEBHOOK_ROUTE_NAMES
    #: The clock behind synthesis, buckets, timestamps and idempotency expiry.
    clock: _OnState[Clock] = _OnState()
    #: How long a synthesis takes, in API seconds (the next synthesis obeys a change).
    synthesis_seconds: _OnState[float] = _OnState()
    #: The spread of synthesis durations, a fraction of ``synthesis_seconds``.
    synthesis_jitter: _OnState[float] = _OnState()
    #: Bucket limits by bucket name.
    bucket_limits: _OnState[dict[str, BucketLimit]] = _OnState()
    #: Where a resynthesis or ref regeneration ends: ``"reviewing"`` or ``"ready"``.
    after_resynthesis: _OnState[str] = _OnState()
    #: The chance that a synthesis fails.
    failure_rate: _OnState[float] = _OnState()
    #: The 402 code: ``"insufficient_credits"`` or ``"balance_too_low"``.
    insufficient_credits_code: _OnState[str] = _OnState()
    #: ``"X-RateLimit-"`` or ``"RateLimit-"``.
    rate_limit_header_prefix: _OnState[str] = _OnState()
    #: Whether :attr:`requests` records requests (switch off for long benchmarks).
    keep_request_log: _OnState[bool] = _OnState()
    #: Every request seen, in arrival order (see :meth:`requests_to`).
    requests: _OnState[list[RecordedRequest]] = _OnState()
    #: Every charge billed, in order (see :meth:`charges_for`).
    ledger: _OnState[list[Charge]] = _OnState()
    #: How many 429s each bucket answered.
    rate_limited: _OnState[collections.Counter[str]] = _OnState()
    #: ``/v1/`` requests read and not yet answered.
    requests_in_progress: _OnState[int] = _OnState()
    #: ``http://HOST:PORT`` once started, ``""`` before.
    base_url: _OnState[str] = _OnState()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        time_scale: float | None = None,
        synthesis_seconds: float = 45.0,
        synthesis_jitter: float = 0.0,
        buckets: Mapping[str, BucketLimit] | None = None,
        credits: float = 1000.0,
        api_key: str | None = None,
        after_resynthesis: str = "reviewing",
        failure_rate: float = 0.0,
        insufficient_credits_code: str = "insufficient_credits",
        rate_limit_header_prefix: str = "X-RateLimit-",
        seed: int = 0,
    ) -> None:
        if clock is not None and time_scale is not None:
            raise ValueError("give clock or time_scale, not both")
        if after_resynthesis not in ("reviewing", "ready"):
            raise ValueError("after_resynthesis must be 'reviewing' or 'ready'")
        if synthesis_seconds < 0:
            raise ValueError("synthesis_seconds must be >= 0")
        if not 0 <= synthesis_jitter < 1:
            raise ValueError("synthesis_jitter must be a fraction in [0, 1)")
        self.host = host
        self.port = port
        self._state = FakeState(
            clock=clock or (ScaledClock(time_scale) if time_scale else SystemClock()),
            synthesis_seconds=float(synthesis_seconds),
            synthesis_jitter=synthesis_jitter,
            bucket_limits=buckets or {},
            after_resynthesis=after_resynthesis,
            failure_rate=failure_rate,
            insufficient_credits_code=insufficient_credits_code,
            rate_limit_header_prefix=rate_limit_header_prefix,
            seed=seed,
        )
        #: Fault rules: ``fake.faults.add(Fault(FaultKind.DROP, route=...))``.
        self.faults = FaultPlan(seed=seed)
        self._webhooks = Webhooks(self._state)
        self._pipeline = Pipeline(self._state, self.faults,
                                  (*ROUTES, *webhook_routes(self._webhooks)))
        self._runner: web.AppRunner | None = None
        #: The team that :attr:`api_key` belongs to.
        self.default_team = self.add_team(name="Default Team", credits=credits, api_key=api_key)
        self._control = ControlApi(self._state, self.faults, self.default_team, self.route_names,
                                   self._webhooks)

    # -- set-up ------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """A live key of the default team."""
        return self.default_team.api_key

    def add_team(
        self,
        *,
        name: str = "Team",
        credits: float = 1000.0,
        api_key: str | None = None,
        scope: str = "full",
        pinned_version: str = DEFAULT_VERSION,
    ) -> FakeTeam:
        """Create a team with one key (given or freshly minted ``al_live_…``)."""
        return self._state.add_team(name=name, credits=credits, api_key=api_key, scope=scope,
                                    pinned_version=pinned_version)

    def add_key(self, team: FakeTeam, api_key: str, *, scope: str = "full") -> str:
        """Give ``team`` another key with ``scope`` (``read``, ``write`` or ``full``)."""
        return self._state.add_key(team, api_key, scope=scope)

    def revoke_key(self, api_key: str) -> None:
        """Revoke a key: requests with it then get 401 ``revoked_api_key``."""
        self._state.revoke_key(api_key)

    def add_character(
        self,
        *,
        name: str = "Seeded",
        status: str = "ready",
        team: FakeTeam | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Put a character straight into ``status`` (no charge) and return its id."""
        record = self._state.seed_character(
            team or self.default_team, name=name, status=status,
            attributes=dict(attributes or {"gender": "female"}),
        )
        return record.id

    def fail_next_synthesis(self, character_id: str, message: str = "Synthesis failed.") -> None:
        """Make the next synthesis of ``character_id`` end in ``failed``."""
        self._state.fail_next_synthesis(character_id, message)

    def finish_synthesis(self, character_id: str) -> None:
        """End a running synthesis now, whatever the clock says."""
        self._state.finish_synthesis(character_id)

    def character(self, character_id: str) -> dict[str, Any]:
        """The character as the API would render it now (for assertions)."""
        record = self._state.find_any_character(character_id)
        self._state.settle(record)
        return self._state.render(record)

    def team_of(self, api_key: str) -> FakeTeam:
        """The team a key belongs to (``KeyError`` for an unknown key)."""
        team = self._state.team_for_key(api_key)
        if team is None:
            raise KeyError(api_key)
        return team

    def session(self, **options: Any) -> AurousSession:
        """An :class:`aurous_async.AurousSession` pointed at this started fake::

            async with fake.session() as s:
                character = await s.characters.wait(cid)

        It gets this fake's ``base_url``, the default team's ``api_key`` and, unless the
        fake runs on real time, the fake's own clock: a :class:`ScaledClock` shared by
        both sides agrees on every instant (not just on the scale), so the client's
        polls and rate-limit pacing run as fast as the fake's time, and its buckets
        match the fake's — no 429s. Any ``options`` (``timeout=``, ``rate_limits=``,
        ``clock=``, even ``api_key=``) are passed on and win over these.
        """
        if not self.base_url:
            raise RuntimeError("start the fake first (async with, start() or run_in_thread())")
        # The one place the fake touches the client side, imported here so the fake's
        # own modules stay an independent reading of the docs.
        from .. import AurousSession

        options.setdefault("api_key", self.api_key)
        options.setdefault("base_url", self.base_url)
        if not isinstance(self.clock, SystemClock):
            options.setdefault("clock", self.clock)
        return AurousSession(**options)

    # -- inspection --------------------------------------------------------------------

    def charges_for(self, character_id: str) -> list[Charge]:
        """Every charge billed against one character."""
        return [c for c in self.ledger if c.character_id == character_id]

    def credits_spent(self, team: FakeTeam | None = None) -> float:
        """Credits billed to ``team`` (the default team when omitted)."""
        team_id = (team or self.default_team).id
        return sum(c.credits for c in self.ledger if c.team_id == team_id)

    def requests_to(self, route: str) -> list[RecordedRequest]:
        """Recorded requests whose ``"METHOD /template"`` equals ``route``."""
        return [r for r in self.requests if r.route == route]

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook delivery attempt so far, in order (each with its status, body
        and signature header)."""
        return list(self._webhooks.deliveries)

    def webhook_endpoint(self, endpoint_id: str) -> WebhookEndpointRecord:
        """A registered webhook endpoint (its ``status``, ``consecutive_failures``,
        ``secret``); ``KeyError`` once deleted or when unknown."""
        return self._webhooks.endpoints[endpoint_id]

    async def wait_for_webhook_deliveries(self, count: int) -> list[WebhookDelivery]:
        """Wait until ``count`` delivery attempts were made in all; returns them all.
        Works from the fake's loop or another one (``run_in_thread``); bound the wait
        with :func:`asyncio.wait_for`."""
        loop = self._webhooks.loop
        if loop is None:
            raise RuntimeError("the fake is not running")
        if loop is asyncio.get_running_loop():
            return await self._webhooks.wait_for(count)
        future = asyncio.run_coroutine_threadsafe(self._webhooks.wait_for(count), loop)
        return await asyncio.wrap_future(future)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> str:
        """Start listening; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._runner is not None:
            return self.base_url
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            # A busy port or a foreign address: nothing was started, nothing leaks.
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        app = web.Application(client_max_size=2 * 1024 * 1024)
        self._pipeline.add_to(app)
        self._control.add_to(app)
        for method, path, handler in storage_routes(self._state):
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        self._webhooks.start()
        site = web.SockSite(self._runner, sock)
        await site.start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await self._webhooks.stop()
            await runner.cleanup()

    @contextlib.contextmanager
    def run_in_thread(self, *, startup_timeout: float = 10.0) -> Iterator[FakeAurousServer]:
        """Serve from a background thread with its own event loop, for synchronous test
        code or any async framework::

            with FakeAurousServer(time_scale=60).run_in_thread() as fake:
                ...  # talk to fake.base_url from anywhere

        Set-up helpers (``add_character``, ``faults.add``) may be called from the test's
        thread between requests.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-aurous", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(startup_timeout)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(startup_timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(startup_timeout)
            loop.close()

    async def __aenter__(self) -> FakeAurousServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<FakeAurousServer {self.base_url or 'not started'}>"
