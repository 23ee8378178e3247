"""Client-side token buckets that mirror the server's, so a fan-out never sees a 429.

Each bucket holds up to ``burst`` tokens and gains ``rate`` tokens every ``period``
seconds, exactly as the server's do (api-spec.md §2.8). Every attempt of a call — retries
included — takes one token of its bucket before it is sent.

Scheduling (after aiolimiter, but strictly first-in first-out): a caller that finds the
bucket non-empty *and nobody queued* takes a token at once. Everyone else joins a FIFO
queue of futures. One timer per bucket — never one per waiter — fires when the next
token is due and hands tokens to the head of the queue. A cancelled waiter is skipped; if
it was cancelled after being handed a token, the token goes back to the bucket, so
cancellation never loses a token nor holds up the queue.

The server corrects us: ``X-RateLimit-Remaining`` (or ``RateLimit-Remaining``) lower our
tokens when someone else spent from the team's bucket, and a 429 empties the bucket until
its ``Retry-After`` has passed.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import weakref
from typing import Protocol, runtime_checkable

import attrs

from ._clock import Clock, SystemClock, TimerHandle
from ._errors import WatchTimeoutError

__all__ = [
    "InMemoryRateLimiter",
    "RateLimit",
    "RateLimitFeedback",
    "RateLimiter",
    "RateLimits",
    "shared_limiter",
]

# Float refills land a hair under whole tokens; a token is a token within this slack.
_EPSILON = 1e-9
#: The longest a 429 can block a bucket, whatever its Retry-After says (seconds).
MAX_BLOCK = 120.0


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


@attrs.frozen
class RateLimit:
    """One bucket: ``rate`` tokens every ``period`` seconds, holding at most ``burst``.

    >>> RateLimit(6, 60.0, 12).per_second
    0.1
    """

    rate: float = attrs.field(validator=_positive)
    period: float = attrs.field(validator=_positive)
    burst: int = attrs.field(validator=_positive_int)

    @property
    def per_second(self) -> float:
        return self.rate / self.period


@attrs.frozen(kw_only=True)
class RateLimits:
    """The buckets of one team, by name. Defaults are the documented ones.

    ``characters_synthesize`` is shared by synthesize-create, regenerate-ref and
    resynthesize; ``characters_post`` by the other character writes; ``characters_get``
    by character reads; ``get`` by the remaining GETs (balance).
    """

    characters_synthesize: RateLimit = RateLimit(6, 60.0, 12)
    characters_post: RateLimit = RateLimit(30, 60.0, 60)
    characters_get: RateLimit = RateLimit(120, 60.0, 240)
    get: RateLimit = RateLimit(600, 60.0, 1200)

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(type(self)):
            if not isinstance(getattr(self, field.name), RateLimit):
                raise TypeError(f"{field.name} must be a RateLimit")

    def for_bucket(self, bucket: str) -> RateLimit:
        """The limit of bucket ``bucket``; unknown names raise ``KeyError``."""
        if bucket not in attrs.fields_dict(type(self)):
            raise KeyError(bucket)
        limit: RateLimit = getattr(self, bucket)
        return limit


@attrs.frozen(kw_only=True)
class RateLimitFeedback:
    """What one response said about its bucket (any field may be unknown)."""

    remaining: int | None = None
    reset: float | None = None  # Unix time at which the bucket would be full again
    retry_after: float | None = None
    limited: bool = False  # the response was a 429
    sent_at: float | None = None  # clock.monotonic() when the request went out
    received_at: float | None = None  # ... and when its answer came back


@runtime_checkable
class RateLimiter(Protocol):
    """What the session needs of a limiter; pass your own as ``rate_limits=``.

    ``acquire`` waits for one token of ``bucket``; it raises :class:`WatchTimeoutError`
    at once if the token cannot come before ``deadline`` (a ``clock.monotonic()`` time).
    ``observe`` receives what each response said about the bucket. A limiter may also
    have ``release(bucket)``: the session calls it to give back a token whose request was
    cancelled or refused before it went out.
    """

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None: ...

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None: ...


class _Bucket:
    """One FIFO token bucket (see the module docstring)."""

    def __init__(self, limit: RateLimit, clock: Clock, *, phase_sync: bool) -> None:
        self.phase_sync = phase_sync
        self.capacity = float(limit.burst)
        self.rate = limit.per_second
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock.monotonic()
        self.blocked_until = -math.inf
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.live_waiters = 0
        self.timer: TimerHandle | None = None
        self.timer_at = math.inf
        # Phase: when the bucket last left "full", and whether an answer has since told
        # us when the server's refill clock started. See _take and observe.
        self.phase_start = -math.inf
        self.phase_confirmed = True
        self.lag = 0.0  # the longest recent round trip, in clock seconds

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def _ready_at(self, now: float, tokens_needed: float) -> float:
        """When we will hold ``tokens_needed`` tokens (and no 429 blocks us); while the
        refill clock waits for an answer, estimated from the longest round trip seen."""
        missing = max(0.0, tokens_needed - self.tokens)
        start = self.updated if self.phase_confirmed else self.phase_start + self.lag
        return max(self.blocked_until, max(now, start) + missing / self.rate)

    def _take(self, now: float) -> None:
        if self.phase_sync and self.tokens >= self.capacity - _EPSILON:
            # Leaving "full" starts the refill clock. The server's starts only when our
            # first request *arrives*, later than now; counting from now would run ahead
            # of the server by that latency and earn a 429 on the first refilled token.
            # So refill waits for the first answer of this phase (see observe).
            self.phase_start = now
            self.phase_confirmed = False
            self.updated = math.inf
        self.tokens -= 1

    async def acquire(self, deadline: float | None) -> None:
        now = self.clock.monotonic()
        self._refill(now)
        if not self.live_waiters and now >= self.blocked_until and self.tokens >= 1 - _EPSILON:
            self._take(now)
            return
        # Our turn comes once everyone queued before us, and we, have a token.
        eta = self._ready_at(now, self.live_waiters + 1)
        if deadline is not None and eta > deadline:
            raise WatchTimeoutError(
                f"a rate-limit wait of {eta - now:.1f}s would pass the deadline"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        self.live_waiters += 1
        self._arm(now)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Handed a token in the same loop tick we were cancelled: give it back.
                self.tokens += 1
            else:
                future.cancel()
                self.live_waiters -= 1
            self._wake()
            raise

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, math.inf
        self._wake()

    def _wake(self) -> None:
        """Hand out what tokens there are, in queue order, then re-arm the timer."""
        now = self.clock.monotonic()
        self._refill(now)
        while self.waiters and self.waiters[0].done():  # cancelled: skip
            self.waiters.popleft()
        if now >= self.blocked_until:
            while self.waiters and self.tokens >= 1 - _EPSILON:
                future = self.waiters.popleft()
                if future.done():
                    continue
                self._take(now)
                self.live_waiters -= 1
                future.set_result(None)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """Keep exactly one timer, set for when the head of the queue can go."""
        if not self.live_waiters:
            if self.timer is not None:
                self.timer.cancel()
                self.timer, self.timer_at = None, math.inf
            return
        at = self._ready_at(now, 1.0)
        if not self.phase_confirmed:
            return  # observe() re-arms once an answer starts the refill clock
        if self.timer is not None and self.timer_at <= at:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.clock.call_later(at - now, self._on_timer)

    def observe(self, feedback: RateLimitFeedback) -> None:
        now = self.clock.monotonic()
        self._refill(now)
        sent, received = feedback.sent_at, feedback.received_at
        if sent is not None and received is not None:
            self.lag = max(self.lag * 0.98, received - sent)
            if not self.phase_confirmed and sent >= self.phase_start:
                # The first request of this phase reached the server no later than this
                # attempt ended (answered or not): the server's refill clock is running
                # by now, so ours may start.
                self.phase_confirmed = True
                self.updated = max(self.phase_start, received)
        if feedback.limited:
            self.tokens = min(self.tokens, 0.0)
            wait = feedback.retry_after if feedback.retry_after is not None else 1 / self.rate
            # A hostile or broken Retry-After must not stall every caller for ever.
            self.blocked_until = max(self.blocked_until, now + min(wait, MAX_BLOCK))
        else:
            # The server's count is the truth about the team's bucket, but a blurred one:
            # Remaining is rounded down, and the bucket has refilled since the request
            # arrived (up to a round trip ago). Only a count lower than that blur can
            # explain means someone else (another process, a script) spent tokens.
            trip = (received - sent) if sent is not None and received is not None else 0.0
            blur = 1.0 + trip * self.rate
            seen: float | None = None
            if feedback.remaining is not None:
                seen = float(feedback.remaining)
            elif feedback.reset is not None:
                # Reset is rounded up to a whole second.
                until_full = max(0.0, feedback.reset - self.clock.time())
                seen = max(0.0, self.capacity - until_full * self.rate)
                blur += self.rate
            if seen is not None and self.tokens > seen + blur:
                self.tokens = seen
        if self.live_waiters:
            # The head's due time may have moved later; re-arm from scratch.
            if self.timer is not None:
                self.timer.cancel()
                self.timer, self.timer_at = None, math.inf
            self._arm(now)

    def release(self) -> None:
        self._refill(self.clock.monotonic())
        self.tokens = min(self.capacity, self.tokens + 1)
        self._wake()

    @property
    def queued(self) -> int:
        return self.live_waiters


class InMemoryRateLimiter:
    """Token buckets in this process, FIFO-fair and cancellation-safe.

    Sessions normally share one automatically (per API key, base URL and event loop);
    build one yourself to share it explicitly or to run it on another clock::

        limiter = InMemoryRateLimiter(RateLimits(), clock=ScaledClock(60))
        async with AurousSession(key, rate_limits=limiter) as s: ...

    ``phase_sync`` (on by default) keeps our refill clock behind the server's: when a
    full bucket is first spent, refilling starts only once an answer (or a failed
    attempt) shows the request reached the server. The session reports every attempt,
    so this costs one round trip per burst. Switch it off to use the limiter on its own,
    with nobody calling :meth:`observe`.
    """

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Clock | None = None,
        phase_sync: bool = True,
    ) -> None:
        self.phase_sync = phase_sync
        self.limits = limits if limits is not None else RateLimits()
        if not isinstance(self.limits, RateLimits):
            raise TypeError("limits must be a RateLimits")
        self.clock: Clock = clock or SystemClock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, name: str) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(
                self.limits.for_bucket(name), self.clock, phase_sync=self.phase_sync
            )
        return bucket

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        """Wait for one token of ``bucket`` (FIFO)."""
        await self._bucket(bucket).acquire(deadline)

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None:
        """Fold what the server said about ``bucket`` into our count."""
        self._bucket(bucket).observe(feedback)

    def release(self, bucket: str) -> None:
        """Give back a token whose request never went out (optional in the protocol)."""
        self._bucket(bucket).release()

    def tokens(self, bucket: str) -> float:
        """Tokens available in ``bucket`` now (for dashboards and tests)."""
        state = self._bucket(bucket)
        state._refill(self.clock.monotonic())
        return state.tokens

    def queued(self, bucket: str) -> int:
        """How many callers wait for ``bucket``."""
        return self._bucket(bucket).queued

    def __repr__(self) -> str:
        return f"InMemoryRateLimiter({self.limits!r})"


# One limiter per (API key, base URL, limits, clock) per event loop: futures and timers
# belong to a loop, and the loop's death must free its limiters.
_SHARED: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, RateLimits, int], InMemoryRateLimiter]
] = weakref.WeakKeyDictionary()


def shared_limiter(
    api_key: str, base_url: str, limits: RateLimits, clock: Clock
) -> InMemoryRateLimiter:
    """The process-wide limiter for this team key and server (in the running loop)."""
    loop = asyncio.get_running_loop()
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()
    key = (fingerprint, base_url, limits, id(clock))
    per_loop = _SHARED.setdefault(loop, {})
    limiter = per_loop.get(key)
    if limiter is None:
        limiter = per_loop[key] = InMemoryRateLimiter(limits, clock=clock)
    return limiter
