"""The in-memory limiter on an injected clock: exact admissions, FIFO, cancellation,
sharing, and correction by the server."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

import aurous_async as aa
from aurous_async._errors import DeadlineExceededError
from aurous_async._ratelimit import answer_feedback, answer_values
from aurous_async.testing import BucketLimit, FakeAurousServer, FakeClock

from .conftest import on_virtual_time, serve_app

SYNTH = "characters_synthesize"


def limiter(clock: FakeClock, **limits: aa.RateLimit) -> aa.InMemoryRateLimiter:
    # On its own: nobody reports answers, so the refill clock starts with the first take.
    return aa.InMemoryRateLimiter(aa.RateLimits(**limits), clock=clock, phase_sync=False)


async def admitted_times(lim: aa.InMemoryRateLimiter, clock: FakeClock, n: int,
                         bucket: str = SYNTH) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await lim.acquire(bucket)
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await clock.run_until_idle()
    await asyncio.gather(*tasks)
    return times


async def test_burst_then_steady_rate_exactly(clock: FakeClock) -> None:
    lim = limiter(clock)
    start = clock.monotonic()
    times = [t - start for t in await admitted_times(lim, clock, 20)]
    # 12 at once (the burst), then one every 10 s (6 a minute).
    assert times[:12] == [0.0] * 12
    assert times[12:] == pytest.approx([10.0 * k for k in range(1, 9)])


async def test_no_window_admits_more_than_the_bucket_allows(clock: FakeClock) -> None:
    lim = limiter(clock)
    times = await admitted_times(lim, clock, 40)
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u < t + 60]
        assert len(in_window) <= 12 + 6  # burst + one minute of refill


async def test_waiters_are_served_first_in_first_out(clock: FakeClock) -> None:
    lim = limiter(clock, characters_synthesize=aa.RateLimit(1, 1.0, 1))
    order: list[int] = []

    async def one(i: int) -> None:
        await lim.acquire(SYNTH)
        order.append(i)

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)  # enqueue in order
    await clock.run_until_idle()
    await asyncio.gather(*tasks)
    assert order == list(range(10))


async def test_newcomer_does_not_overtake_the_queue(clock: FakeClock) -> None:
    lim = limiter(clock, characters_synthesize=aa.RateLimit(1, 1.0, 1))
    await lim.acquire(SYNTH)  # empty now
    first = asyncio.create_task(lim.acquire(SYNTH))
    await asyncio.sleep(0)
    await clock.advance(1.0)  # a token accrues and is handed to the queued waiter...
    second = asyncio.create_task(lim.acquire(SYNTH))
    await asyncio.sleep(0)
    assert first.done() and not second.done()  # ...not to the newcomer
    await clock.advance(1.0)
    assert second.done()


async def test_cancelled_waiter_takes_no_token_and_does_not_block(clock: FakeClock) -> None:
    lim = limiter(clock, characters_synthesize=aa.RateLimit(1, 1.0, 1))
    await lim.acquire(SYNTH)
    doomed = asyncio.create_task(lim.acquire(SYNTH))
    behind = asyncio.create_task(lim.acquire(SYNTH))
    await asyncio.sleep(0)
    assert lim.queued(SYNTH) == 2
    doomed.cancel()
    await asyncio.sleep(0)
    assert lim.queued(SYNTH) == 1
    await clock.advance(1.0)
    assert behind.done() and doomed.cancelled()
    assert lim.tokens(SYNTH) == pytest.approx(0.0)


async def test_token_handed_to_a_cancelled_waiter_goes_back(clock: FakeClock) -> None:
    lim = limiter(clock, characters_synthesize=aa.RateLimit(1, 1.0, 1))
    await lim.acquire(SYNTH)
    waiter = asyncio.create_task(lim.acquire(SYNTH))
    await asyncio.sleep(0)
    # Fire the timer (the token is handed over) and cancel in the same loop tick.
    clock._now += 1.0
    lim._state(SYNTH).wake_all()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lim.tokens(SYNTH) == pytest.approx(1.0)
    assert lim.queued(SYNTH) == 0


async def test_cancelling_many_waiters_leaves_the_bucket_whole(clock: FakeClock) -> None:
    lim = limiter(clock)
    tasks = [asyncio.create_task(lim.acquire(SYNTH)) for _ in range(100)]
    await asyncio.sleep(0)
    for task in tasks[12:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert lim.queued(SYNTH) == 0
    assert clock.pending_timers == 0
    await clock.advance(120)
    assert lim.tokens(SYNTH) == pytest.approx(12.0)


async def test_one_timer_per_bucket_not_per_waiter(clock: FakeClock) -> None:
    lim = limiter(clock)
    tasks = [asyncio.create_task(lim.acquire(SYNTH)) for _ in range(500)]
    await asyncio.sleep(0)
    assert clock.pending_timers == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_deadline_fails_at_once_when_the_wait_is_too_long(clock: FakeClock) -> None:
    lim = limiter(clock)
    for _ in range(12):
        await lim.acquire(SYNTH)
    with pytest.raises(DeadlineExceededError):
        await lim.acquire(SYNTH, deadline=clock.monotonic() + 5)  # next token in 10 s
    assert lim.queued(SYNTH) == 0
    task = asyncio.create_task(lim.acquire(SYNTH, deadline=clock.monotonic() + 15))
    await clock.advance(10)
    assert task.done() and task.exception() is None


async def test_server_remaining_lowers_local_tokens(clock: FakeClock) -> None:
    lim = limiter(clock)
    lim.observe(SYNTH, aa.RateLimitFeedback(remaining=3))
    assert lim.tokens(SYNTH) == pytest.approx(3.0)
    lim.observe(SYNTH, aa.RateLimitFeedback(remaining=10))  # never raises ours
    assert lim.tokens(SYNTH) == pytest.approx(3.0)
    # Only Reset known: full in 60 s at 0.1/s means 6 tokens short.
    lim2 = limiter(clock)
    lim2.observe(SYNTH, aa.RateLimitFeedback(reset=clock.time() + 60))
    assert lim2.tokens(SYNTH) == pytest.approx(6.0)


async def test_rounding_and_round_trips_are_not_mistaken_for_spending(clock: FakeClock) -> None:
    lim = limiter(clock)
    for _ in range(11):
        await lim.acquire(SYNTH)
    # We hold 1 token; the server says 0 after rounding down 0.9 — no one else spent.
    sent = clock.monotonic() - 2.0  # and the request left 2 s (0.2 tokens) ago
    lim.observe(SYNTH, aa.RateLimitFeedback(remaining=0, sent_at=sent, received_at=clock.monotonic()))
    assert lim.tokens(SYNTH) == pytest.approx(1.0)


async def test_429_empties_the_bucket_until_retry_after(clock: FakeClock) -> None:
    lim = limiter(clock)
    lim.observe(SYNTH, aa.RateLimitFeedback(limited=True, retry_after=30, remaining=0))
    task = asyncio.create_task(lim.acquire(SYNTH))
    await clock.advance(29.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()


async def test_sessions_with_one_key_and_url_share_buckets() -> None:
    """Defect guarded: two sessions of one key and server each spending a full burst."""
    key = "al_live_" + "c" * 64 + "share"
    a = aa.AurousSession(key, base_url="http://127.0.0.1:1")
    b = aa.AurousSession(key, base_url="http://127.0.0.1:1")
    other_url = aa.AurousSession(key, base_url="http://127.0.0.1:2")
    other_key = aa.AurousSession("al_live_" + "d" * 64 + "share", base_url="http://127.0.0.1:1")
    limiters = [s.rate_limiter for s in (a, b, other_url, other_key)]
    assert all(isinstance(lim, aa.InMemoryRateLimiter) for lim in limiters)
    lim_a, lim_b, lim_url, lim_key = limiters  # type: ignore[misc]
    await lim_a.acquire("characters_post")
    assert lim_b.tokens("characters_post") == pytest.approx(59.0)
    assert lim_url.tokens("characters_post") == pytest.approx(60.0)
    assert lim_key.tokens("characters_post") == pytest.approx(60.0)
    assert aa.AurousSession(key, base_url="http://127.0.0.1:1", rate_limits=None).rate_limiter is None
    custom = aa.InMemoryRateLimiter()
    assert aa.AurousSession(key, base_url="http://127.0.0.1:1", rate_limits=custom).rate_limiter is custom
    for s in (a, b, other_url, other_key):
        await s.aclose()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="rate"):
        aa.RateLimit(0, 60, 1)
    with pytest.raises(ValueError, match="burst"):
        aa.RateLimit(1, 60, 0)
    with pytest.raises(TypeError):
        aa.RateLimit(1, 60, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aa.RateLimits(characters_get=(1, 2, 3))  # type: ignore[arg-type]
    assert aa.RateLimits().characters_synthesize == aa.RateLimit(6, 60.0, 12)
    assert aa.RateLimits().characters_post == aa.RateLimit(30, 60.0, 60)
    assert aa.RateLimits().characters_get == aa.RateLimit(120, 60.0, 240)


# -- against the fake server ----------------------------------------------------------------


class CountingLimiter(aa.InMemoryRateLimiter):
    """The real limiter, counting the tokens it hands out."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.acquired: list[str] = []

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        await super().acquire(bucket, deadline=deadline)
        self.acquired.append(bucket)


class RecordingLimiter(aa.InMemoryRateLimiter):
    """The real limiter, keeping every feedback the session reports to it (a caller's
    limiter: the session goes through ``observe`` with a RateLimitFeedback)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.reports: list[aa.RateLimitFeedback] = []

    def observe(self, bucket: str, feedback: aa.RateLimitFeedback) -> None:
        self.reports.append(feedback)
        super().observe(bucket, feedback)


async def test_every_attempt_takes_a_token_retries_included(sfake: FakeAurousServer, auto_clock: FakeClock) -> None:
    from aurous_async.testing import Fault, FaultKind

    lim = CountingLimiter(auto_clock)
    sfake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/balance", times=2))
    cid = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.DROP, route="POST /v1/characters/{character_id}/resynthesize", nth=1))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                rate_limits=lim) as s:
        await s.balance()
        await s.characters.resynthesize(cid)
    assert lim.acquired == ["get"] * 3 + ["characters_synthesize"] * 2


async def test_server_spending_elsewhere_is_noticed(sfake: FakeAurousServer, auto_clock: FakeClock) -> None:
    lim = aa.InMemoryRateLimiter(clock=auto_clock)
    cid = sfake.add_character()
    # Someone else (another process) spends 200 GET tokens of the team.
    other = aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock, rate_limits=None)
    async with other:
        await asyncio.gather(*(other.characters.get(cid) for _ in range(200)))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                rate_limits=lim) as s:
        await s.characters.get(cid)
    assert lim.tokens("characters_get") <= 40


async def test_an_answer_with_only_reset_lowers_a_sessions_count(clock: FakeClock) -> None:
    """Guards the session's own path for rate-limit headers (which skips Reset when
    Remaining is there): an answer with Reset alone must still be read, against the
    wall clock. Full again in 60 s at 2 a second means 120 of 240 tokens are left."""

    async def handler(request: web.Request) -> web.Response:
        reset = math.ceil(clock.time() + 60)
        return web.Response(body=b'{"id": "char_1", "status": "ready", "name": "A"}',
                            content_type="application/json",
                            headers={"X-RateLimit-Reset": str(reset)})

    app = web.Application()
    app.router.add_get("/v1/characters/char_1", handler)
    lim = aa.InMemoryRateLimiter(clock=clock)
    async with serve_app(app) as url, aa.AurousSession(
            "al_live_" + "r" * 40, base_url=url, clock=clock, rate_limits=lim) as s:
        await s.characters.get("char_1")
    # Up to a second under 120: Reset is rounded up to a whole second.
    assert 118 <= lim.tokens("characters_get") <= 120


def test_a_reset_rounded_up_to_the_second_is_not_taken_for_spending(clock: FakeClock) -> None:
    """Reset is a whole second, rounded up: a full bucket whose answer says "full again
    in a second" has spent nothing (the blur allows that second's refill, 2 tokens)."""
    lim = aa.InMemoryRateLimiter(clock=clock, phase_sync=False)
    headers = CIMultiDictProxy(CIMultiDict({"X-RateLimit-Reset": str(int(clock.time()) + 1)}))
    now = clock.monotonic()
    lim.observe_answer("characters_get", 200, headers, clock, now, now)
    assert lim.tokens("characters_get") == 240


async def test_429_from_the_server_empties_and_the_retry_goes_after_the_wait(auto_clock: FakeClock) -> None:
    async with FakeAurousServer(clock=auto_clock) as fake:
        lim = aa.InMemoryRateLimiter(clock=auto_clock)
        cid = fake.add_character()
        # The team's GET bucket is spent by somebody else; our limiter does not know.
        fake.team_of(fake.api_key).buckets.clear()
        from aurous_async.testing._state import TokenBucket

        bucket = TokenBucket(BucketLimit(120, 240), auto_clock.monotonic())
        bucket.tokens = 0
        fake.default_team.buckets["characters_get"] = bucket
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=auto_clock,
                                    rate_limits=lim) as s:
            character = await s.characters.get(cid)
        assert character.id == cid
        assert fake.rate_limited["characters_get"] == 1
        assert auto_clock.sleeps == [1.0]  # the server's Retry-After, waited in full


async def test_sixty_concurrent_resynthesizes_no_429_and_on_schedule(clock: FakeClock) -> None:
    """Guards: a fan-out that trips the server's 6/min, burst 12 bucket, or one that
    paces slower than it. On virtual time (a round trip takes none of it), 60 calls are
    12 of burst then 48 refills: exactly 480 API seconds."""
    async with FakeAurousServer(clock=clock, synthesis_seconds=1) as fake:
        ids = [fake.add_character() for _ in range(60)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            started = clock.monotonic()
            await on_virtual_time(clock, fake, asyncio.gather(
                *(s.characters.resynthesize(cid) for cid in ids)))
            elapsed = clock.monotonic() - started
    assert fake.rate_limited == {}
    assert elapsed == pytest.approx((60 - 12) / (6 / 60), abs=1e-6)
    assert len(fake.ledger) == 60


async def test_phase_sync_refill_waits_for_the_first_answer(clock: FakeClock) -> None:
    lim = aa.InMemoryRateLimiter(aa.RateLimits(characters_synthesize=aa.RateLimit(1, 1.0, 1)),
                                 clock=clock)
    sent = clock.monotonic()
    await lim.acquire(SYNTH)  # spends the full bucket: a new phase
    waiter = asyncio.create_task(lim.acquire(SYNTH))
    await clock.advance(5)
    assert not waiter.done()  # no answer yet: the server may not have started refilling
    lim.observe(SYNTH, aa.RateLimitFeedback(sent_at=sent, received_at=clock.monotonic()))
    await clock.advance(0.99)
    assert not waiter.done()
    await clock.advance(0.01)
    assert waiter.done()


async def test_a_callers_limiter_hears_every_rate_limit_header(
        sfake: FakeAurousServer, auto_clock: FakeClock) -> None:
    """Guards the feedback a limiter of the caller's gets: Remaining and Reset both
    (the session's own limiter skips Reset when Remaining is there; others may not
    want to), with the round trip's times."""
    lim = RecordingLimiter(auto_clock)
    cid = sfake.add_character()
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                rate_limits=lim) as s:
        await s.characters.get(cid)
    [report] = lim.reports
    assert report.remaining == 239
    assert report.reset == math.ceil(auto_clock.time() + 0.5)  # 1 of 240 at 2 a second
    assert report.sent_at is not None and report.received_at is not None
    assert (report.retry_after, report.limited) == (None, False)


async def test_cancelled_attempt_is_still_reported_to_the_limiter(auto_clock: FakeClock) -> None:
    from aiohttp import web

    from .conftest import serve_app

    lim = RecordingLimiter(auto_clock)

    # A server that holds the request until the test lets it go (after the cancel), so
    # nothing is left to wait out when it stops.
    arrived, release = asyncio.Event(), asyncio.Event()

    async def balance(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"credits": 1})

    app = web.Application()
    app.router.add_get("/v1/balance", balance)
    async with serve_app(app) as url:
        async with aa.AurousSession("al_test_" + "r" * 32, base_url=url, clock=auto_clock,
                                    rate_limits=lim) as s:
            task = asyncio.create_task(s.balance())
            await asyncio.wait_for(arrived.wait(), timeout=10)  # the attempt is out
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        release.set()
    assert len(lim.reports) == 1 and lim.reports[0].sent_at is not None
    assert lim.reports[0].remaining is None


async def test_a_waiter_behind_an_unanswered_probe_keeps_its_deadline(clock: FakeClock) -> None:
    """Defect guarded (review): behind a cold-start probe the deadline check passed and
    nothing enforced it: a 1 s timeout waited as long as the probe took."""
    lim = aa.InMemoryRateLimiter(clock=clock)  # phase_sync: cold start on
    await lim.acquire(SYNTH)  # the probe goes out and is not answered yet
    waiter = asyncio.create_task(lim.acquire(SYNTH, deadline=clock.monotonic() + 1))
    await clock.advance(0.5)
    assert not waiter.done()
    await clock.advance(0.6)
    with pytest.raises(DeadlineExceededError):
        await waiter
    assert lim.queued(SYNTH) == 0


async def test_a_probe_that_never_answers_does_not_hold_the_bucket_for_ever(
    clock: FakeClock,
) -> None:
    """Defect guarded (review): a probe whose loop died left every later caller of that
    bucket in the process waiting for ever."""
    from aurous_async._bucket import PROBE_LEASE

    lim = aa.InMemoryRateLimiter(clock=clock)
    await lim.acquire(SYNTH)  # the probe; its answer never comes
    waiter = asyncio.create_task(lim.acquire(SYNTH))
    await clock.advance(PROBE_LEASE - 1)
    assert not waiter.done()
    await clock.advance(2)
    assert waiter.done() and waiter.exception() is None


async def test_a_burst_whose_answer_never_comes_does_not_freeze_the_refill(
    clock: FakeClock,
) -> None:
    """Defect guarded: the refill of a burst waits for the first answer; if it never
    came (its call was lost), every later waiter waited for ever, with no timer."""
    from aurous_async._bucket import PROBE_LEASE

    lim = aa.InMemoryRateLimiter(aa.RateLimits(characters_synthesize=aa.RateLimit(1, 1.0, 1)),
                                 clock=clock)
    lim._state(SYNTH).cold = False  # past the cold start, to isolate the burst's phase
    await lim.acquire(SYNTH)  # leaves "full": the refill waits for this call's answer
    waiter = asyncio.create_task(lim.acquire(SYNTH))
    await clock.advance(PROBE_LEASE - 1)
    assert not waiter.done()
    await clock.advance(3)
    assert waiter.done() and waiter.exception() is None


# -- the short paths against the plain ones --------------------------------------------
# take_if_free writes out _refill and _try_take, and observe_answer reads a plain count by
# hand (every request of every session pays for both); these sequences hold them to the
# plain code they stand for.


class _PlainLimiter(aa.InMemoryRateLimiter):
    """The same limiter taking every token through ``_refill``/``_try_take`` and every
    answer through ``answer_values`` and ``observe``: the steps the fast paths repeat."""

    def try_acquire(self, bucket: str) -> bool:
        state = self._state(bucket)
        with state.lock:
            if state.waiting:
                return False
            state._refill(self.clock.monotonic())
            return state._try_take(self.clock.monotonic())

    def observe_answer(self, bucket: str, status: int, headers: Any, clock: Any,
                       sent_at: float | None, received_at: float | None) -> None:
        values = answer_values(status, headers, clock)
        self.observe(bucket, answer_feedback(values, sent_at, received_at))


_COUNTS = st.one_of(
    st.integers(min_value=0, max_value=14).map(str),
    st.integers(min_value=-3, max_value=10**17).map(str),
    st.sampled_from(["", " 7 ", "+3", "-0", "007", "1_0", "5.0", "1e2", "5\x1f", "\u0663",
                     "9" * 15, "9" * 16, "0" * 15 + "1", "nan", "inf", "0x1", "  ", "3 4"]),
)
# When an attempt went out: at the last take (a call's own answer), seconds ago, or never.
_SENT = st.one_of(st.none(), st.just("at the last take"),
                  st.sampled_from([0.0, 0.05, 1.0]), st.floats(min_value=0, max_value=130))
_ANSWERS = st.tuples(
    st.just("answer"),
    st.sampled_from([200, 201, 404, 429, 503]),
    st.one_of(st.none(), _COUNTS),  # X-RateLimit-Remaining
    st.one_of(st.none(), _COUNTS),  # RateLimit-Remaining
    st.one_of(st.none(), st.integers(min_value=-5, max_value=200)),  # Reset, from now
    st.one_of(st.none(), st.sampled_from(["0", "2", "30", "soon"])),  # Retry-After
    _SENT,
    st.booleans(),  # answered (else: it went out and no answer came)
)
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("advance"),
              st.one_of(st.sampled_from([0.0, 1e-9, 0.5, 10.0, 120.0]),
                        st.floats(min_value=0, max_value=200))),
    st.tuples(st.just("take")),
    st.tuples(st.just("release")),
    _ANSWERS,
), max_size=60)
_STATE_FIELDS = ("tokens", "updated", "blocked_until", "phase_start", "phase_confirmed",
                 "lag", "cold", "probing", "probe_started")
_GOT = ("answer", 200, "11", None, None, None, "at the last take", True)  # one fewer


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS, phase_sync=st.booleans(),
       limit=st.sampled_from([aa.RateLimit(6, 60.0, 12), aa.RateLimit(10**9, 1.0, 10**9),
                              aa.RateLimit(1, 1.0, 1)]))
# A burst's first answer starts the refill; a count just under ours is only rounding.
@example(steps=[("take",), ("advance", 0.2), _GOT, ("take",), ("advance", 0.2), _GOT,
                ("take",)], phase_sync=True, limit=aa.RateLimit(6, 60.0, 12))
# A burst whose answer never comes still refills once its lease is over.
@example(steps=[("take",), _GOT, ("take",), ("advance", 130.0), ("take",), ("take",)],
         phase_sync=True, limit=aa.RateLimit(6, 60.0, 12))
# ... and so does the late answer of that burst's first call.
@example(steps=[("take",), _GOT, ("advance", 20.0), ("take",), ("advance", 130.0), _GOT],
         phase_sync=True, limit=aa.RateLimit(6, 60.0, 12))
# Boundaries (found by review): a lease of exactly 120 s; a count exactly at the blur; a
# refill that lands a hair under a whole token.
@example(steps=[("take",), _GOT, ("advance", 5.0), ("take",), ("advance", 120.0), ("take",)],
         phase_sync=True, limit=aa.RateLimit(1, 1.0, 1))
@example(steps=[("take",), ("answer", 200, "12", None, None, None, 0.0, True),
                ("answer", 200, "10", None, None, None, 0.0, True)],
         phase_sync=True, limit=aa.RateLimit(6, 60.0, 12))
@example(steps=[("take",)] * 12 + [step for wait in (0.3, 0.1, 0.3, 0.3, 0.1, 0.3)
                                   for step in (("advance", wait), ("take",))],
         phase_sync=False, limit=aa.RateLimit(1, 1.0, 12))
# A count past 2**53 is no count (float() says so): the Reset beside it is read instead.
@example(steps=[("take",), _GOT, ("advance", 1.0),
                ("answer", 200, "9" * 16, None, 100, None, 0.5, True)],
         phase_sync=True, limit=aa.RateLimit(6, 60.0, 12))
def test_the_short_paths_count_as_the_plain_ones(
        steps: list[tuple[Any, ...]], phase_sync: bool, limit: aa.RateLimit) -> None:
    clocks = (FakeClock(), FakeClock())
    fast = aa.InMemoryRateLimiter(aa.RateLimits(characters_synthesize=limit),
                                  clock=clocks[0], phase_sync=phase_sync)
    plain = _PlainLimiter(aa.RateLimits(characters_synthesize=limit), clock=clocks[1],
                          phase_sync=phase_sync)
    last_take = clocks[0].monotonic()
    for step in steps:
        results = []
        for lim, clock in ((fast, clocks[0]), (plain, clocks[1])):
            if step[0] == "advance":
                clock._now += step[1]
            elif step[0] == "take":
                results.append(lim.try_acquire(SYNTH))
                last_take = clock.monotonic()
            elif step[0] == "release":
                lim.release(SYNTH)
            else:
                _, status, x_remaining, remaining, reset, retry_after, sent, answered = step
                headers = CIMultiDict[str]()
                for name, value in (("X-RateLimit-Remaining", x_remaining),
                                    ("RateLimit-Remaining", remaining),
                                    ("X-RateLimit-Reset", None if reset is None
                                     else str(int(clock.time()) + reset)),
                                    ("Retry-After", retry_after)):
                    if value is not None and answered:
                        headers[name] = value
                now = clock.monotonic()
                sent_at = (None if sent is None else last_take if isinstance(sent, str)
                           else now - sent)
                lim.observe_answer(SYNTH, status if answered else 0,
                                   CIMultiDictProxy(headers), clock, sent_at,
                                   None if sent_at is None else now)
        assert results[:1] == results[1:], step
        a, b = fast._state(SYNTH), plain._state(SYNTH)
        assert [getattr(a, f) for f in _STATE_FIELDS] == [getattr(b, f) for f in _STATE_FIELDS], step


def test_a_count_at_the_edge_of_the_blur_is_read_as_the_plain_code_reads_it() -> None:
    """Floating-point sums depend on their order: a count read on the short path is
    corrected as the plain path corrects it (found by review: for a round trip of
    1 - 6e-16 s, 4 + 1 + t and 4 + (1 + t) fall on either side of a full bucket's 6
    tokens)."""
    tokens = []
    for kind in (aa.InMemoryRateLimiter, _PlainLimiter):
        clock = FakeClock()
        lim = kind(aa.RateLimits(characters_synthesize=aa.RateLimit(1, 1.0, 6)), clock=clock)
        now = clock.monotonic()
        assert lim.try_acquire(SYNTH)  # the cold probe, and its answer
        lim.observe_answer(SYNTH, 200, CIMultiDictProxy(CIMultiDict(
            {"X-RateLimit-Remaining": "5"})), clock, now, now)
        clock._now += 100.0  # full again
        lim.observe_answer(SYNTH, 200, CIMultiDictProxy(CIMultiDict(
            {"X-RateLimit-Remaining": "4"})), clock, 0.0, 0.9999999999999994)
        tokens.append(lim.tokens(SYNTH))
    assert tokens == [6.0, 6.0]
