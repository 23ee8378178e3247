"""Client-side token buckets that mirror the server's, so a fan-out never sees a 429.

Each bucket holds up to ``burst`` tokens and gains ``rate`` tokens every ``period``
seconds, exactly as the server's do (see "Rate limits" in the API reference). Every
attempt of a call — retries included — takes one token of its bucket before it is sent.
The counting and queueing are in ``_bucket.py``; this module has the specs, the
:class:`RateLimiter` protocol, the in-memory limiter and the process-wide sharing of its
buckets.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
from multidict import istr

from ._bucket import MAX_BLOCK, TokenState
from ._clock import Clock, SystemClock, readings
from ._construct import constructor
from ._errors import parse_retry_after
from ._validate import integer, number

__all__ = [
    "MAX_BLOCK",
    "InMemoryRateLimiter",
    "RateLimit",
    "RateLimitFeedback",
    "RateLimiter",
    "RateLimits",
    "adapt_limiter",
    "answer_feedback",
    "answer_values",
    "estimated_wait",
    "shared_limiter",
]

def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    number(value, attribute.name)


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    integer(value, attribute.name, minimum=1)


@attrs.frozen
class RateLimit:
    """One bucket: ``rate`` tokens every ``period`` seconds, holding at most ``burst``.

    >>> RateLimit(6, 60.0, 12).per_second
    0.1
    """

    rate: float = attrs.field(validator=_positive)
    period: float = attrs.field(validator=_positive)
    burst: int = attrs.field(validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        # Each of rate and period may be fine while their ratio under- or overflows.
        number(self.rate / self.period, "rate / period (tokens per second)")

    @property
    def per_second(self) -> float:
        return self.rate / self.period


@attrs.frozen(kw_only=True)
class RateLimits:
    """The buckets of one team, by name. Defaults are the documented ones.

    ``characters_synthesize`` is shared by synthesize-create, regenerate-ref and
    resynthesize; ``characters_post`` by the other character writes; ``characters_get``
    by character reads; ``get`` by the remaining GETs (balance, webhook endpoints);
    ``webhook_endpoints_post`` by webhook endpoint writes and ``webhooks_test`` by test
    fires.
    """

    characters_synthesize: RateLimit = RateLimit(6, 60.0, 12)
    characters_post: RateLimit = RateLimit(30, 60.0, 60)
    characters_get: RateLimit = RateLimit(120, 60.0, 240)
    get: RateLimit = RateLimit(600, 60.0, 1200)
    webhook_endpoints_post: RateLimit = RateLimit(10, 60.0, 10)
    webhooks_test: RateLimit = RateLimit(30, 60.0, 30)

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


# The rate-limit headers as multidict's case-insensitive keys (no case folding per
# lookup); both spellings are documented.
_RETRY_AFTER = istr("Retry-After")
_REMAINING = _X_REMAINING, _REMAINING_PLAIN = (
    istr("X-RateLimit-Remaining"), istr("RateLimit-Remaining"))
_RESET = (istr("X-RateLimit-Reset"), istr("RateLimit-Reset"))
_INFINITY = math.inf
# One is made per request: without __init__'s keyword call and frozen setattr.
_new_feedback = constructor(RateLimitFeedback)


# What an answer says about its bucket: remaining, reset, retry_after, limited (the
# first four fields of a RateLimitFeedback).
AnswerValues = tuple[int | None, float | None, float | None, bool]


def answer_values(status: int, headers: Mapping[str, str], clock: Clock) -> AnswerValues:
    """What one attempt's answer says about its bucket (``status`` 0 and no headers
    when none came); ``clock`` reads an HTTP-date ``Retry-After``."""
    limited = status == 429
    retry_after = None
    if limited or _RETRY_AFTER in headers:
        retry_after = parse_retry_after(headers.get(_RETRY_AFTER), now=clock.time())
    remaining = _header_number(headers, _REMAINING)
    if remaining is not None:  # a count: whole, and exact as a float
        remaining = int(remaining) if remaining < 2**53 else None
    return remaining, _header_number(headers, _RESET), retry_after, limited


def answer_feedback(values: AnswerValues, sent_at: float | None,
                    received_at: float | None) -> RateLimitFeedback:
    """:func:`answer_values` and the attempt's times, as a :class:`RateLimitFeedback`."""
    return _new_feedback(*values, sent_at, received_at)


def _header_number(headers: Mapping[str, str], names: tuple[str, str]) -> float | None:
    raw = headers.get(names[0]) or headers.get(names[1])
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        # float() ignores surrounding whitespace, but not the C0 separators str.strip()
        # also drops ("5\x1f"): those, and only those, pay for the strip.
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    return value if 0.0 <= value < _INFINITY else None  # not NaN, not infinite



@runtime_checkable
class RateLimiter(Protocol):
    """What the session needs of a limiter; pass your own as ``rate_limits=``.

    ``acquire`` waits for one token of ``bucket``; it raises
    :class:`~aurous_async._errors.DeadlineExceededError` at once if the token cannot come
    before ``deadline`` (a ``clock.monotonic()`` time). ``observe`` receives what each
    response said about the bucket. ``release`` gives back a token whose request was
    cancelled or refused before it went out. A limiter of yours without ``release`` is
    accepted too: the session then never gives tokens back (see :func:`adapt_limiter`).
    """

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None: ...

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None: ...

    def release(self, bucket: str) -> None: ...


class _WithoutRelease:
    """A caller's limiter that has ``acquire`` and ``observe`` but no ``release``."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        await self.limiter.acquire(bucket, deadline=deadline)

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None:
        self.limiter.observe(bucket, feedback)

    def release(self, bucket: str) -> None:
        """No-op: this limiter cannot take tokens back."""

    def __repr__(self) -> str:
        return repr(self.limiter)


def adapt_limiter(limiter: object) -> RateLimiter:
    """``limiter`` as a full :class:`RateLimiter` (adding a no-op ``release`` to one
    that lacks it); ``TypeError`` if it has no ``acquire`` and ``observe``."""
    if isinstance(limiter, RateLimiter):
        return limiter
    if callable(getattr(limiter, "acquire", None)) and callable(getattr(limiter, "observe", None)):
        return _WithoutRelease(limiter)
    raise TypeError("rate_limits must be a RateLimits, a RateLimiter or None")


def estimated_wait(limiter: RateLimiter | None, bucket: str) -> float | None:
    """Seconds a call of ``bucket`` made now would wait for its token: 0 with pacing off,
    ``None`` when the limiter cannot tell (it has no ``estimated_wait``)."""
    if limiter is None:
        return 0.0
    inner = limiter.limiter if isinstance(limiter, _WithoutRelease) else limiter
    estimate = getattr(inner, "estimated_wait", None)
    if estimate is None:
        return None
    value = estimate(bucket)
    return float(value) if isinstance(value, (int, float)) else None


class InMemoryRateLimiter:
    """Token buckets in this process, FIFO-fair and cancellation-safe.

    Sessions normally share buckets automatically (per API key, base URL and bucket, across
    threads and event loops); build one yourself to share it explicitly or to run it on
    another clock::

        limiter = InMemoryRateLimiter(RateLimits(), clock=ScaledClock(60))
        async with AurousSession(key, rate_limits=limiter) as s: ...

    ``phase_sync`` (on by default) keeps our buckets behind the server's: refilling after
    a burst starts only once an answer shows the first request reached the server, and a
    bucket's very first call goes alone so its answer's rate-limit headers can set the
    count (a "cold start": the server's bucket may be empty from a previous run). The
    session reports every attempt, so this costs one round trip. Switch it off to use the
    limiter on its own, with nobody calling :meth:`observe`.
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
        self._monotonic, self._time = readings(self.clock)
        self._states: dict[str, TokenState] = {}
        self._shared_as: tuple[str, str] | None = None

    def _state(self, name: str) -> TokenState:
        state = self._states.get(name)
        if state is None:
            limit = self.limits.for_bucket(name)
            if self._shared_as is not None:
                state = _shared_state(*self._shared_as, name, limit, self.clock)
            else:
                state = TokenState(capacity=limit.burst, rate=limit.per_second,
                                   now=self.clock.monotonic(), observed=self.phase_sync)
            self._states[name] = state
        return state

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        """Wait for one token of ``bucket`` (FIFO)."""
        if not self.try_acquire(bucket):
            await self._state(bucket).queue(self.clock).acquire(deadline)

    def try_acquire(self, bucket: str) -> bool:
        """Take a token of ``bucket`` if one is there and nobody (in any event loop)
        queues for it; never waits. The session tries this before :meth:`acquire`,
        which saves a coroutine on every call that finds a token."""
        state = self._states.get(bucket) or self._state(bucket)
        return state.take_if_free(self._monotonic())

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None:
        """Fold what the server said about ``bucket`` into our count."""
        state = self._states.get(bucket) or self._state(bucket)
        state.observe(self._monotonic(), self._time(), feedback.remaining, feedback.reset,
                      feedback.retry_after, feedback.limited, feedback.sent_at,
                      feedback.received_at)

    def observe_answer(self, bucket: str, status: int, headers: Mapping[str, str],
                       clock: Clock, sent_at: float | None, received_at: float | None) -> None:
        """:meth:`observe` straight from an attempt's answer, without a
        :class:`RateLimitFeedback` made for it (the session calls this once per attempt):
        ``status``, ``headers`` and ``clock`` as :func:`answer_values` takes them."""
        if status != 429:
            # Nearly every answer: a plain count, and nothing else in it counts (Retry-After
            # only with a 429, Reset only without a count). In under 16 characters int()
            # reads the whole numbers float() does, and the same value (below 2**53, so
            # exact); anything else (a negative count, "5.0", a stray control character)
            # takes the long way. The wall clock serves only Reset: not read.
            raw = headers.get(_X_REMAINING) or headers.get(_REMAINING_PLAIN)
            if raw is not None and len(raw) < 16:
                try:
                    count = int(raw)
                except ValueError:
                    count = -1
                if count >= 0:
                    state = self._states.get(bucket) or self._state(bucket)
                    state.observe(self._monotonic(), 0.0, count, None, None, False,
                                  sent_at, received_at)
                    return
        self.observe(bucket, answer_feedback(answer_values(status, headers, clock),
                                             sent_at, received_at))

    def release(self, bucket: str) -> None:
        """Give back a token whose request never went out."""
        self._state(bucket).release(self.clock.monotonic())

    def tokens(self, bucket: str) -> float:
        """Tokens available in ``bucket`` now (for dashboards and tests)."""
        return self._state(bucket).tokens_at(self.clock.monotonic())

    def queued(self, bucket: str) -> int:
        """How many callers of the running event loop wait for ``bucket``."""
        return self._state(bucket).queue(self.clock).live_waiters

    def estimated_wait(self, bucket: str) -> float:
        """Seconds a call of ``bucket`` made now would wait for its token (0 when one
        is there), behind everyone already queued in this event loop.

        >>> InMemoryRateLimiter(phase_sync=False).estimated_wait("characters_synthesize")
        0.0
        """
        state = self._state(bucket)
        queue = state.queue(self.clock) if _in_loop() else None
        return state.estimated_wait(self.clock.monotonic(),
                                    queue.live_waiters if queue is not None else 0)

    def __repr__(self) -> str:
        return f"InMemoryRateLimiter({self.limits!r})"


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# Bucket state per process: per (API key, base URL, bucket, its limit), shared by every
# thread and event loop. Clocks count time differently, so each non-system clock has its
# own buckets (held only while that clock lives); every SystemClock shares one set.
_REGISTRY_LOCK = threading.Lock()
_SYSTEM: dict[tuple[str, str, str, RateLimit], TokenState] = {}
_BY_CLOCK: weakref.WeakKeyDictionary[
    Clock, dict[tuple[str, str, str, RateLimit], TokenState]
] = weakref.WeakKeyDictionary()


def _shared_state(fingerprint: str, base_url: str, name: str, limit: RateLimit,
                  clock: Clock) -> TokenState:
    key = (fingerprint, base_url, name, limit)
    with _REGISTRY_LOCK:
        table = _SYSTEM if type(clock) is SystemClock else _BY_CLOCK.setdefault(clock, {})
        state = table.get(key)
        if state is None:
            state = table[key] = TokenState(capacity=limit.burst, rate=limit.per_second,
                                            now=clock.monotonic(), observed=True)
        return state


def shared_limiter(
    api_key: str, base_url: str, limits: RateLimits, clock: Clock
) -> InMemoryRateLimiter:
    """A limiter whose buckets are this process's buckets for this team key and server:
    every session with the same key and base URL spends from the same counts, in any
    thread or event loop, whatever its other buckets' settings or clock instance."""
    limiter = InMemoryRateLimiter(limits, clock=clock)
    limiter._shared_as = (hashlib.sha256(api_key.encode()).hexdigest(), base_url)
    return limiter

