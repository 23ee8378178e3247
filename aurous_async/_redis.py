"""``RedisRateLimiter``: the same token buckets, kept in Redis, so every process and
machine of a team spends from one budget.

Each bucket is one Redis hash, changed only by Lua scripts (atomic) that read the time
from Redis itself, so callers on machines with skewed clocks agree.

How it schedules (GCRA-style reservations): a caller *reserves* the next token — the
script deducts it at once, letting the count go below zero, and answers how long until
that token has accrued. The caller sleeps that long, then sends. Reservations are served
in the order Redis runs the scripts, so across processes the order is first-come
first-served by arrival at Redis; within one process a lock keeps it strictly FIFO. A
caller cancelled while it sleeps gives its token back, so cancellation wastes nothing;
nobody is ever admitted before their token exists.

Requires the ``redis`` extra (``pip install 'aurous-async[redis]'``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ._clock import SYSTEM_CLOCK, Clock
from ._errors import AurousError, DeadlineExceededError
from ._ratelimit import RateLimit, RateLimiter, RateLimitFeedback, RateLimits

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RateLimiterUnavailableError", "RedisRateLimiter"]

logger = logging.getLogger("aurous_async")

# Common prologue: load the bucket, refill it up to Redis's own "now".
# A phase (see _ratelimit) freezes refill after a full bucket is first spent, until an
# answer shows the request reached the API server, or FREEZE_CAP seconds pass (a process
# that died mid-request must not stall everyone).
_PROLOGUE = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'blocked', 'frozen')
local tokens = tonumber(s[1]) or cap
local updated = tonumber(s[2]) or now
local blocked = tonumber(s[3]) or 0
local frozen = tonumber(s[4]) or 0
if frozen > 0 and now > frozen + tonumber(ARGV[3]) then
  updated = frozen + tonumber(ARGV[3])
  frozen = 0
end
if frozen == 0 and now > updated then
  tokens = math.min(cap, tokens + (now - updated) * rate)
  updated = now
end
local function save()
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated),
             'blocked', tostring(blocked), 'frozen', tostring(frozen))
  -- An idle bucket is full again after cap/rate seconds; keep it a while longer.
  redis.call('PEXPIRE', KEYS[1], math.ceil((cap / rate + 120) * 1000))
end
local function wait_for(level)
  return math.max(blocked - now, math.max(now, updated) - now + math.max(0, level - tokens) / rate)
end
"""

# ARGV[5] = max wait (negative: no limit), ARGV[6] = 1 to start phases.
# Returns {code, seconds as a string}: 1 = reserved, sleep that long then go;
# 0 = the wait would pass the deadline; 2 = the refill clock waits for an answer, ask
# again after that long.
_RESERVE = _PROLOGUE + """
local max_wait = tonumber(ARGV[5])
if frozen > 0 and tokens < 1 - 1e-9 then
  save()
  return {2, tostring(math.min(1 / rate, tonumber(ARGV[4])))}
end
local wait = wait_for(1)
if max_wait >= 0 and wait > max_wait then
  save()
  return {0, tostring(wait)}
end
if tokens >= cap - 1e-9 and tonumber(ARGV[6]) == 1 then
  frozen = now
end
tokens = tokens - 1
save()
return {1, tostring(math.max(0, wait))}
"""

# Give back a token a cancelled caller reserved but never used.
_RELEASE = _PROLOGUE + """
tokens = math.min(cap, tokens + 1)
save()
return 1
"""

# ARGV[5] = remaining (-1 unknown), ARGV[6] = 1 if 429, ARGV[7] = retry_after (-1
# unknown), ARGV[8] = seconds since the request was sent (-1 unknown).
_OBSERVE = _PROLOGUE + """
local remaining = tonumber(ARGV[5])
local age = tonumber(ARGV[8])
if frozen > 0 and age >= 0 and now - age >= frozen then
  updated = now
  frozen = 0
end
if tonumber(ARGV[6]) == 1 then
  tokens = math.min(tokens, 0)
  local ra = tonumber(ARGV[7])
  if ra < 0 then ra = 1 / rate end
  ra = math.min(ra, 120)
  blocked = math.max(blocked, now + ra)
elseif remaining >= 0 then
  -- Remaining is rounded down and a round trip old: only a count below that blur
  -- shows spending by someone else.
  local blur = 1 + math.max(0, age) * rate
  if tokens > remaining + blur then tokens = remaining end
end
save()
return 1
"""

#: After this many seconds with no answer a frozen refill clock starts anyway.
FREEZE_CAP = 30.0
#: While the refill clock waits for an answer, a caller who needs a refilled token asks
#: again this often (at most): the wait is one round trip to the API.
_FROZEN_POLL = 0.02


class RateLimiterUnavailableError(AurousError):
    """The shared rate limiter (Redis) could not be reached; no request was sent."""


class RedisRateLimiter:
    """Token buckets shared through Redis by every process that uses the same ``prefix``.

    ::

        import redis.asyncio as redis
        limiter = aurous_async.RedisRateLimiter.from_url("redis://localhost:6379/0")
        async with aurous_async.AurousSession(rate_limits=limiter) as s: ...

    Use one ``prefix`` per team (the buckets are the team's). When Redis is down,
    ``acquire`` raises :class:`RateLimiterUnavailableError` — unless you pass a
    ``fallback`` limiter (e.g. ``InMemoryRateLimiter()``) to pace by this process alone
    meanwhile. ``phase_sync`` keeps the refill behind the API server's (see
    :class:`InMemoryRateLimiter`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        limits: RateLimits | None = None,
        *,
        prefix: str = "aurous:rl",
        clock: Clock | None = None,
        fallback: RateLimiter | None = None,
        phase_sync: bool = True,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        self.limits = limits if limits is not None else RateLimits()
        if not isinstance(self.limits, RateLimits):
            raise TypeError("limits must be a RateLimits")
        self.client = client
        self.prefix = prefix
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.fallback = fallback
        self.phase_sync = phase_sync
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._observe = client.register_script(_OBSERVE)
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        limits: RateLimits | None = None,
        **kwargs: Any,
    ) -> RedisRateLimiter:
        """Build the limiter with a new ``redis.asyncio`` client for ``url``."""
        try:
            import redis.asyncio as aioredis
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(
                "RedisRateLimiter needs the redis extra: pip install 'aurous-async[redis]'"
            ) from None
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, limits, **kwargs)

    def _key(self, bucket: str) -> str:
        return f"{self.prefix}:{bucket}"

    def _args(self, spec: RateLimit) -> list[Any]:
        return [spec.burst, repr(spec.per_second), FREEZE_CAP, _FROZEN_POLL]

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        """Reserve one token of ``bucket`` and wait until it has accrued."""
        spec = self.limits.for_bucket(bucket)
        max_wait = -1.0 if deadline is None else max(0.0, deadline - self.clock.monotonic())
        lock = self._locks.setdefault(bucket, asyncio.Lock())
        args = [*self._args(spec), repr(max_wait), 1 if self.phase_sync else 0]
        async with lock:  # FIFO among this process's callers
            while True:
                call = asyncio.ensure_future(self._run(self._reserve, bucket, args))
                try:
                    reply = await asyncio.shield(call)
                except asyncio.CancelledError:
                    # The script may still run; if it reserved a token, give it back.
                    call.add_done_callback(lambda done: self._release_if_granted(done, bucket))
                    raise
                except RateLimiterUnavailableError:
                    if self.fallback is None:
                        raise
                    logger.warning("Redis is unreachable; pacing %s by this process alone",
                                   bucket)
                    await self.fallback.acquire(bucket, deadline=deadline)
                    return
                code, wait = int(reply[0]), float(reply[1])
                if code != 2:
                    break
                await self.clock.sleep(wait)
        if not code:
            raise DeadlineExceededError(f"a rate-limit wait of {wait:.1f}s would pass the deadline")
        if wait <= 0:
            return
        try:
            await self.clock.sleep(wait)
        except asyncio.CancelledError:
            self._spawn(self._give_back(bucket))
            raise

    def observe(self, bucket: str, feedback: RateLimitFeedback) -> None:
        """Send what the API said about ``bucket`` to Redis (in the background)."""
        spec = self.limits.for_bucket(bucket)
        if self.fallback is not None:
            self.fallback.observe(bucket, feedback)
        interesting = feedback.limited or feedback.remaining is not None or (
            self.phase_sync and feedback.sent_at is not None
        )
        if not interesting:
            return
        age = -1.0
        if feedback.sent_at is not None:
            age = max(0.0, self.clock.monotonic() - feedback.sent_at)
        args = [
            *self._args(spec),
            -1 if feedback.remaining is None else feedback.remaining,
            1 if feedback.limited else 0,
            -1.0 if feedback.retry_after is None else repr(feedback.retry_after),
            repr(age),
        ]
        self._spawn(self._run(self._observe, bucket, args))

    def release(self, bucket: str) -> None:
        """Give back a token whose request never went out (in the background)."""
        self._spawn(self._give_back(bucket))

    async def _give_back(self, bucket: str) -> None:
        spec = self.limits.for_bucket(bucket)
        await self._run(self._release, bucket, self._args(spec))

    def _release_if_granted(self, done: asyncio.Future[Any], bucket: str) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        if int(done.result()[0]) == 1:
            self._spawn(self._give_back(bucket))

    async def _run(self, script: Any, bucket: str, args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await script(keys=[self._key(bucket)], args=args)
        except (RedisError, OSError) as exc:
            raise RateLimiterUnavailableError(
                f"the Redis rate limiter is unavailable: {type(exc).__name__}"
            ) from exc

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("rate-limit bookkeeping in Redis failed: %s", task.exception())

    async def tokens(self, bucket: str) -> float:
        """Tokens in ``bucket`` now, as Redis holds them (negative: reserved ahead)."""
        raw = await self.client.hget(self._key(bucket), "tokens")
        return float(raw) if raw is not None else float(self.limits.for_bucket(bucket).burst)

    async def aclose(self) -> None:
        """Finish background bookkeeping and close the Redis client."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"RedisRateLimiter(prefix={self.prefix!r}, limits={self.limits!r})"

