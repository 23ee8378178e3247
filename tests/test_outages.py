"""Transient failures never end paid work, and nothing waits for ever (issue 12, items
A, B, C, F, G, H and 5): outages and restarts, failed polls, slow paid POSTs, a learned
duration gone stale, abandoned watchers, closing with calls queued, raising callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

import aurous_async as aa
from aurous_async._polling import PollScheduler
from aurous_async._watch import watch_character
from aurous_async.testing import (
    BucketLimit,
    FakeAurousServer,
    FakeClock,
    Fault,
    FaultKind,
    ScaledClock,
)

from .conftest import on_virtual_time, sdk_tasks

S = aa.CharacterStatus
GET_ONE = "GET /v1/characters/{character_id}"


# -- A. a restart of the API mid-batch ----------------------------------------------------------


async def test_an_api_restart_mid_batch_fails_no_charged_id() -> None:
    """Defect guarded: a 5 s API restart ended a 40-id fan-out with every id failed (14
    already charged), and re-running the failed ids charged those 14 twice. On virtual
    time: the clock moves only while the test lets it, from timer to timer once every
    request has been answered, and stands still while the fake stops and starts."""
    clock = FakeClock()
    # The burst of 12, then a token a second on both sides.
    fake = FakeAurousServer(clock=clock, synthesis_seconds=30,
                            buckets={"characters_synthesize": BucketLimit(60, 12)})
    limits = aa.RateLimits(characters_synthesize=aa.RateLimit(60, 60.0, 12))
    await fake.start()
    try:
        ids = [fake.add_character() for _ in range(20)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=0.5, rate_limits=limits) as s:
            results: list[aa.BatchResult] = []

            async def run() -> None:
                async for result in s.characters.resynthesize_many(ids, auto_save=True,
                                                                   timeout=3_000):
                    results.append(result)

            async def some_charged() -> None:
                for _ in range(20_000):  # (on_virtual_time bounds the wait)
                    if len(fake.ledger) >= 6:
                        return
                    await asyncio.sleep(0.001)

            batch = asyncio.create_task(run())
            await on_virtual_time(clock, fake, some_charged())
            charged = len(fake.ledger)
            assert 6 <= charged < len(ids)  # some charged and some not yet sent
            await fake.stop()
            await on_virtual_time(clock, fake, clock.sleep(8))  # 8 s of connection refused
            await fake.start()
            await on_virtual_time(clock, fake, batch, real_limit=60)
            failed = [r.character_id for r in results if not r.ok]
            assert failed == [], [repr(r.error) for r in results if not r.ok]
            assert sorted(r.character_id for r in results) == sorted(ids)
            # Every id charged exactly once, and saved.
            assert all(len(fake.charges_for(cid)) == 1 for cid in ids)
            assert all(fake.character(cid)["status"] == "ready" for cid in ids)
            # A naive re-run of whatever failed charges nothing more.
            async for _ in s.characters.resynthesize_many(failed):
                pass
            assert len(fake.ledger) == 20
    finally:
        await fake.stop()


async def test_a_watcher_rides_out_a_blip_of_503s() -> None:
    """Defect guarded: one poll out of retries (~7 s of 503s) failed every watcher of
    that character, even with timeout=3600. On virtual time: the backoffs and polls
    take no real time."""
    clock = FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        cid = fake.add_character(status="synthesizing")
        fake.faults.add(Fault(FaultKind.JSON_503, route=GET_ONE, times=12))
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            final = await on_virtual_time(clock, fake, s.characters.wait(cid, timeout=3600))
        assert final.status is S.REVIEWING
        assert len(fake.requests_to(GET_ONE)) > 12


# -- B. no watcher waits for ever after a failed poll ------------------------------------------


def _character(cid: str, status: aa.CharacterStatus) -> aa.Character:
    return aa.Character(id=cid, status=status)


async def _no_save(cid: str) -> aa.Character:
    raise AssertionError("not saving")


async def test_a_watcher_joining_after_a_failed_poll_gets_a_fresh_poll(clock: FakeClock) -> None:
    """Defect guarded: after a failed poll the scheduler never rescheduled the
    character; a watcher joining while the failed one was still subscribed waited for
    ever (0 GETs in 600 API seconds)."""
    answers: list[aa.Character | Exception] = [
        aa.PermissionDeniedError("scope", status=403, code="missing_scope"),
        _character("c1", S.READY),
    ]
    fetched: list[str] = []

    async def fetch(cid: str) -> aa.Character:
        fetched.append(cid)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0), clock)
    first = scheduler.subscribe("c1")  # a watcher waiting for its first state...
    await asyncio.wait_for(first.wait(), timeout=2)
    assert isinstance(first.error, aa.PermissionDeniedError)  # ...gets the poll's error
    # `first` is still subscribed (its consumer has not run yet) when a second one joins.
    second = watch_character(scheduler, _no_save, "c1", clock=clock, auto_save=False,
                             deadline=None)
    update = await asyncio.wait_for(second.__anext__(), timeout=2)
    assert update.status is S.READY and fetched == ["c1", "c1"]
    scheduler.unsubscribe(first)
    await second.aclose()
    await scheduler.aclose()


async def test_an_unexpected_error_in_a_poll_reaches_its_watchers(clock: FakeClock) -> None:
    """Defect guarded (item 5): a non-AurousError from a fetch left its watchers hanging."""
    async def fetch(cid: str) -> aa.Character:
        raise RuntimeError("a bug in a fetch")

    scheduler = PollScheduler(fetch, aa.PollPolicy(), clock)
    watcher = watch_character(scheduler, _no_save, "c1", clock=clock, auto_save=False,
                              deadline=None)
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(watcher.__anext__(), timeout=5)
    await scheduler.aclose()


# -- C. waiting for a slow paid POST's replay ------------------------------------------------------


async def test_a_slow_paid_post_is_waited_for_from_its_first_409() -> None:
    """Defect guarded: the 60 s in-flight budget was counted from the start of the call,
    so a charged POST taking 65 s on the server (default timeout 60 s) raised
    IdempotencyKeyInUseError after 61.9 s instead of waiting for the replay."""
    clock = ScaledClock(200)
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        # 0.35 real s = 70 API s on the server; the client's attempt timeout is 0.3 real
        # s (real time, aiohttp's), as long as the 60 API s in-flight budget.
        fake.faults.add(Fault(FaultKind.SLOW, route="POST /v1/characters", nth=1, delay=0.35))
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=0.3) as s:
            hero = await s.characters.create(name="Slow", generate=True,
                                             attributes={"age": 30})
        assert hero.status is S.SYNTHESIZING
        assert len(fake.ledger) == 1


# -- F. a learned duration gone stale ----------------------------------------------------------


async def test_a_stale_long_estimate_still_polls_before_the_deadline() -> None:
    """Defect guarded: after slow syntheses the first poll was planned at the learned 608 s,
    past a 300 s deadline: WatchTimeoutError with 0 GETs though the character was done.
    On virtual time."""
    clock = FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=45) as fake:
        cid = fake.add_character()
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=3600) as s:
            s._parts.scheduler.estimate.value = 600.0  # as learned from slow syntheses

            async def watch() -> list[aa.StatusUpdate]:
                return [u async for u in s.characters.resynthesize_and_watch(
                    cid, auto_save=True, timeout=300, min_time_left=0)]

            updates = await on_virtual_time(clock, fake, watch())
        assert updates[-1].status is S.READY
        assert len(fake.requests_to(GET_ONE)) >= 1


# -- G. abandoned watchers ----------------------------------------------------------------------


async def test_abandoned_watchers_cost_no_polls() -> None:
    """Defect guarded: twenty watch() iterators kept after their consumer stopped made
    4,763 GETs per API hour (66 % of the GET budget). On virtual time: the clock jumps
    from timer to timer once every request has been answered."""
    clock = FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        ids = [fake.add_character(status="synthesizing") for _ in range(20)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=3600) as s:
            kept = [s.characters.watch(cid) for cid in ids]
            for watcher in kept:
                # Read the first state, then walk away.
                await on_virtual_time(clock, fake, watcher.__anext__())
            before = len(fake.requests_to(GET_ONE))
            await on_virtual_time(clock, fake, clock.sleep(600))  # ten API minutes
            extra = len(fake.requests_to(GET_ONE)) - before
            assert extra <= 20  # at most the one poll each that was already due
            for watcher in kept:
                await watcher.aclose()


# -- H. closing with calls queued for tokens --------------------------------------------------


async def test_aclose_ends_calls_queued_for_a_token_at_once(sfake: FakeAurousServer) -> None:
    """Defect guarded: plain calls queued in the limiter waited for a token (10 s) after
    aclose() before failing."""
    clock = FakeClock()
    limiter = aa.InMemoryRateLimiter(
        aa.RateLimits(characters_get=aa.RateLimit(1, 60.0, 1)), clock=clock, phase_sync=False)
    cid = sfake.add_character()
    s = aa.AurousSession(sfake.api_key, base_url=sfake.base_url, rate_limits=limiter,
                         clock=clock)
    await s.characters.get(cid)  # spends the one token
    queued = [asyncio.create_task(s.characters.get(cid)) for _ in range(5)]
    await asyncio.sleep(0)
    assert limiter.queued("characters_get") == 5
    await s.aclose()
    done, pending = await asyncio.wait(queued, timeout=2)
    assert not pending
    assert all(isinstance(t.exception(), aa.SessionClosedError) for t in done)
    assert limiter.queued("characters_get") == 0


# -- 5. a progress callback that raises ----------------------------------------------------------


@pytest.mark.parametrize("raise_on", ["dispatched", "synthesizing", "reviewing", "done"])
async def test_a_raising_progress_callback_ends_the_batch(raise_on: str) -> None:
    """Defect guarded: raising on synthesizing or reviewing hung resynthesize_many for
    ever (4 of 5 results, then nothing; "Task exception was never retrieved")."""
    clock = ScaledClock(1000)
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        ids = [fake.add_character() for _ in range(5)]

        def progress(p: aa.BatchProgress) -> None:
            if p.state == raise_on:
                raise LookupError(f"callback broke on {raise_on}")

        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=3600) as s:
            with pytest.raises(LookupError, match=raise_on):
                await asyncio.wait_for(
                    _drain(s.characters.resynthesize_many(ids, progress=progress)), 10)
            await asyncio.sleep(0.01)
            assert [t for t in sdk_tasks() if "poll" not in t.get_name()
                    and "save" not in t.get_name()] == []


async def _drain(results: aa.BatchResult | object) -> None:
    async for _ in results:  # type: ignore[attr-defined]
        pass


def test_no_first_poll_is_planned_past_a_deadline(clock: FakeClock) -> None:
    """The scheduler's own guard, on virtual time: a learned 600 s estimate and a 300 s
    deadline put the first poll before the deadline."""
    async def run() -> float:
        async def fetch(cid: str) -> aa.Character:
            return _character(cid, S.REVIEWING)

        scheduler = PollScheduler(fetch, aa.PollPolicy(), clock)
        scheduler.estimate.value = 600.0
        sub = scheduler.subscribe("c1", _character("c1", S.SYNTHESIZING),
                                  deadline=clock.monotonic() + 300)
        due = scheduler._watched["c1"].due - clock.monotonic()
        scheduler.unsubscribe(sub)
        with contextlib.suppress(Exception):
            await scheduler.aclose()
        return due

    due = asyncio.run(run())
    assert 0 < due < 300 and not math.isinf(due)
