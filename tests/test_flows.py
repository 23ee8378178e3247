"""watch, wait, resynthesize_and_watch and resynthesize_many against the fake server in
scaled time (1 API second = 1 ms)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator

import pytest

import aurous_async as aa
from aurous_async._polling import DurationEstimate, PollScheduler
from aurous_async._watch import watch_character
from aurous_async.testing import FakeAurousServer, FakeClock, ScaledClock

from .conftest import on_virtual_time, sdk_tasks

S = aa.CharacterStatus
RESYNTH = "POST /v1/characters/{character_id}/resynthesize"
GET_ONE = "GET /v1/characters/{character_id}"


@pytest.fixture
async def fs(ffake: FakeAurousServer, fast: ScaledClock) -> AsyncIterator[aa.AurousSession]:
    # A generous per-attempt timeout: at ×1000 the default 60 s is 60 ms of real time.
    async with aa.AurousSession(ffake.api_key, base_url=ffake.base_url, clock=fast,
                                timeout=3600) as s:
        yield s


async def test_watch_first_state_then_changes_then_terminal(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="synthesizing")
    updates = [u async for u in fs.characters.watch(cid)]
    assert [u.status for u in updates] == [S.SYNTHESIZING, S.REVIEWING]
    assert [u.previous_status for u in updates] == [None, S.SYNTHESIZING]
    assert [u.terminal for u in updates] == [False, True]
    assert updates[0].polls == 1 and updates[-1].polls >= 2
    assert updates[-1].elapsed >= 25
    assert updates[-1].character.status is S.REVIEWING


async def test_watch_auto_save_yields_ready(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="synthesizing")
    statuses = [(u.status, u.terminal) async for u in fs.characters.watch(cid, auto_save=True)]
    assert statuses == [(S.SYNTHESIZING, False), (S.REVIEWING, False), (S.READY, True)]
    assert ffake.character(cid)["status"] == "ready"


async def test_watch_of_a_terminal_character_is_one_update(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="ready")
    updates = [u async for u in fs.characters.watch(cid)]
    assert [(u.status, u.terminal, u.previous_status) for u in updates] == [(S.READY, True, None)]
    assert len(ffake.requests_to(GET_ONE)) == 1


async def test_resynthesize_and_watch(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="ready")
    updates = [u async for u in fs.characters.resynthesize_and_watch(cid, auto_save=True, force_all=True)]
    assert [u.status for u in updates] == [S.SYNTHESIZING, S.REVIEWING, S.READY]
    assert updates[0].polls == 0  # the POST's answer is the first state
    assert len(ffake.charges_for(cid)) == 1


async def test_wait_returns_final_or_raises_on_failure(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="ready")
    await fs.characters.resynthesize(cid)
    final = await fs.characters.wait(cid, auto_save=True)
    assert final.status is S.READY
    ffake.fail_next_synthesis(cid, "the provider exploded")
    await fs.characters.resynthesize(cid)
    with pytest.raises(aa.SynthesisFailedError) as info:
        await fs.characters.wait(cid)
    assert info.value.character.status is S.FAILED
    assert info.value.character.error_message == "the provider exploded"
    assert "the provider exploded" in str(info.value)


async def test_timeout_raises_watch_timeout(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ffake.synthesis_seconds = 10_000
    cid = ffake.add_character(status="synthesizing")
    with pytest.raises(aa.WatchTimeoutError) as info:
        await fs.characters.wait(cid, timeout=20)
    assert isinstance(info.value, TimeoutError)
    assert info.value.character is not None and info.value.character.status is S.SYNTHESIZING
    seen = []

    async def follow() -> None:
        async for update in fs.characters.watch(cid, timeout=20):
            seen.append(update.status)

    with pytest.raises(aa.WatchTimeoutError):
        await follow()
    assert seen == [S.SYNTHESIZING]
    assert fs.watched == 0


async def test_deleted_while_watched_ends_the_watch(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ffake.synthesis_seconds = 10_000
    cid = ffake.add_character(status="synthesizing")
    updates = []
    async for update in fs.characters.watch(cid):
        updates.append(update)
        if len(updates) == 1:
            await fs.characters.delete(cid)
    assert [(u.status, u.terminal) for u in updates] == [(S.SYNTHESIZING, False), (S.DELETED, True)]


async def test_watching_an_unknown_id_raises_not_found(fs: aa.AurousSession) -> None:
    with pytest.raises(aa.NotFoundError):
        await fs.characters.wait("char_unknown")


async def test_unknown_status_keeps_watching(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    from aurous_async.testing import Fault, FaultKind

    cid = ffake.add_character(status="synthesizing")
    ffake.faults.add(Fault(FaultKind.UNKNOWN_STATUS, route=GET_ONE, nth=1, status_value="queued"))
    statuses = [u.status async for u in fs.characters.watch(cid)]
    assert statuses[0] == "queued" and not statuses[0].is_known
    assert statuses[-1] is S.REVIEWING


async def test_two_watchers_of_one_id_share_gets(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    cid = ffake.add_character(status="synthesizing")

    async def collect() -> list[aa.StatusUpdate]:
        return [u async for u in fs.characters.watch(cid)]

    a, b = await asyncio.gather(collect(), collect())
    gets = len(ffake.requests_to(GET_ONE))
    assert [u.status for u in a] == [u.status for u in b] == [S.SYNTHESIZING, S.REVIEWING]
    assert gets == max(a[-1].polls, b[-1].polls)  # one GET served both watchers


async def test_500_watchers_stay_within_the_get_budget(clock: FakeClock) -> None:
    """Guards: watchers that trip the GET bucket, or starve some ids. Virtual time."""
    async with FakeAurousServer(clock=clock, synthesis_seconds=60) as fake:
        ids = [fake.add_character(status="synthesizing") for _ in range(500)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            results = await on_virtual_time(
                clock, fake, asyncio.gather(*(s.characters.wait(cid) for cid in ids)))
    assert fake.rate_limited == {}
    assert {c.status for c in results} == {S.REVIEWING}
    gets = fake.requests_to(GET_ONE)
    assert {r.path.rsplit("/", 1)[1] for r in gets} == set(ids)  # nobody starved


async def test_policy_controls_the_schedule(clock: FakeClock) -> None:
    """Guards: a watch that ignores its PollPolicy. Virtual time, so the count is exact."""
    async with FakeAurousServer(clock=clock, synthesis_seconds=30, synthesis_jitter=0) as fake:
        start = clock.monotonic()
        cid = fake.add_character(status="synthesizing")
        policy = aa.PollPolicy(interval=5.0, max_interval=5.0, multiplier=1.0, jitter=0.0)
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock, poll=policy) as s:
            await on_virtual_time(clock, fake, s.characters.wait(cid))
        # 30 s of synthesis seen every 5 s: the first GET at 0 s, then one at 5, 10 … 30 s.
        assert [r.at - start for r in fake.requests_to(GET_ONE)] == [0, 5, 10, 15, 20, 25, 30]


def test_poll_policy_validation_and_delays() -> None:
    policy = aa.PollPolicy(interval=2, max_interval=10, multiplier=2, jitter=0)
    assert policy.delays(5) == [2, 4, 8, 10, 10]
    jittered = aa.PollPolicy(jitter=0.1)
    assert all(1.8 <= jittered.delay(0) <= 2.2 for _ in range(100))
    for bad in ({"interval": 0}, {"max_interval": 1.0}, {"multiplier": 0.5}, {"jitter": 1.0},
                {"interval": -1}):
        with pytest.raises(ValueError):  # noqa: PT011 - each names its own field
            aa.PollPolicy(**bad)
    with pytest.raises(TypeError):
        aa.PollPolicy(interval="2")  # type: ignore[arg-type]


# -- resynthesize_many ------------------------------------------------------------------------


async def test_many_yields_each_as_completed_in_dispatch_order(clock: FakeClock) -> None:
    """Virtual time: the no-429 check must not depend on the machine's load."""
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as ffake, \
            aa.AurousSession(ffake.api_key, base_url=ffake.base_url, clock=clock) as s:
        ids = [ffake.add_character() for _ in range(20)]
        snapshots: list[aa.BatchProgress] = []

        async def run() -> list[aa.BatchResult]:
            return [r async for r in s.characters.resynthesize_many(
                ids, auto_save=True, progress=snapshots.append)]

        results = await on_virtual_time(clock, ffake, run())
    assert sorted(r.character_id for r in results) == sorted(ids)
    assert all(r.ok and r.character is not None and r.character.status is S.READY for r in results)
    # Sent in the order given (the order tokens were granted: twelve concurrent POSTs may
    # reach the server in any order over their own connections).
    assert [p.character_id for p in snapshots if p.state == "dispatched"] == ids
    assert sorted(r.path.split("/")[3] for r in ffake.requests_to(RESYNTH)) == sorted(ids)
    assert ffake.rate_limited == {}
    for p in snapshots:
        assert p.queued + p.dispatched + p.synthesizing + p.done + p.failed == p.total == 20
    assert (snapshots[-1].done, snapshots[-1].failed) == (20, 0)
    assert snapshots[-1].gets >= 20


async def test_many_dispatches_in_the_order_given(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ids = [ffake.add_character() for _ in range(16)]
    [r async for r in fs.characters.resynthesize_many(ids, concurrency=1)]
    assert [r.path.split("/")[3] for r in ffake.requests_to(RESYNTH)] == ids


async def test_many_stops_dispatching_at_the_first_402(fast: ScaledClock) -> None:
    async with FakeAurousServer(clock=fast, synthesis_seconds=30, credits=20) as fake:
        ids = [fake.add_character() for _ in range(10)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=fast) as s:
            results = {r.character_id: r async for r in s.characters.resynthesize_many(ids, concurrency=1)}
    assert len(results) == 10
    ok = [cid for cid in ids if results[cid].ok]
    assert ok == ids[:5]
    failed = [results[cid].error for cid in ids[5:]]
    assert all(isinstance(e, aa.InsufficientCreditsError) for e in failed)
    assert len(fake.ledger) == 5
    assert len(fake.requests_to(RESYNTH)) == 6  # the 402 was the last one sent


async def test_one_failure_does_not_stop_the_others(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ids = [ffake.add_character() for _ in range(6)]
    ffake.fail_next_synthesis(ids[2], "bad luck")
    results = {r.character_id: r async for r in fs.characters.resynthesize_many(ids)}
    assert isinstance(results[ids[2]].error, aa.SynthesisFailedError)
    assert results[ids[2]].character is not None and results[ids[2]].character.status is S.FAILED
    assert all(results[c].ok for c in ids if c != ids[2])


async def test_many_errors_per_character_are_reported(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    good = ffake.add_character()
    ffake.synthesis_seconds = 10_000  # busy stays busy, however slow this machine is
    busy = ffake.add_character(status="synthesizing")
    ffake.synthesis_seconds = 30
    results = {r.character_id: r async for r in fs.characters.resynthesize_many([good, "char_gone", busy])}
    assert results[good].ok
    assert isinstance(results["char_gone"].error, aa.NotFoundError)
    assert isinstance(results[busy].error, aa.InvalidRequestError)


async def test_many_batch_timeout(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ffake.synthesis_seconds = 10_000
    ids = [ffake.add_character() for _ in range(3)]
    results = [r async for r in fs.characters.resynthesize_many(ids, timeout=50)]
    assert all(isinstance(r.error, aa.WatchTimeoutError) for r in results)
    assert all(r.character is not None for r in results)


@pytest.mark.parametrize("closing", [False, True])
async def test_breaking_out_early_cancels_everything(fs: aa.AurousSession, ffake: FakeAurousServer,
                                                     closing: bool) -> None:
    ids = [ffake.add_character() for _ in range(40)]  # 12 go at once, the rest wait for tokens
    if closing:
        async with contextlib.aclosing(fs.characters.resynthesize_many(ids)) as results:
            async for _ in results:
                break
        await asyncio.sleep(0)  # the idle poll scheduler exits on its next turn
    else:
        # A plain `break` leaves the generator to the event loop's finalizer, which
        # closes it on the next turns of the loop.
        async for _ in fs.characters.resynthesize_many(ids):
            break
        for _ in range(20):
            await asyncio.sleep(0)
    assert sdk_tasks() == []
    assert fs.watched == 0
    await asyncio.sleep(0.01)  # requests cut off mid-flight may still land
    sent = len(ffake.requests_to(RESYNTH))
    await asyncio.sleep(0.2)  # 200 API seconds: the bucket would have allowed 20 more
    assert len(ffake.requests_to(RESYNTH)) == sent
    limiter = fs.rate_limiter
    assert isinstance(limiter, aa.InMemoryRateLimiter)
    assert limiter.queued("characters_synthesize") == 0


async def test_cancelling_the_consumer_cancels_everything(fs: aa.AurousSession, ffake: FakeAurousServer) -> None:
    ids = [ffake.add_character() for _ in range(30)]

    async def consume() -> None:
        async for _ in fs.characters.resynthesize_many(ids, auto_save=True):
            pass

    task = asyncio.create_task(consume())
    # Cancelled once a few are charged, when most wait for tokens: after a fixed pause,
    # a slow moment of the machine could have let the whole batch end first.
    for _ in range(3000):  # 15 s only bounds a test gone wrong
        if len(ffake.ledger) >= 3 or task.done():
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # What was charged is still saved (auto_save), in the background; then nothing is left.
    for _ in range(300):
        if not fs._parts.saves.pending:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    assert sdk_tasks() == []
    assert fs.watched == 0


async def test_aclose_during_a_fan_out_ends_it_promptly(clock: FakeClock) -> None:
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as ffake:
        ids = [ffake.add_character() for _ in range(30)]
        # Polls without jitter, so what each watcher has seen at the close is exact.
        s = aa.AurousSession(ffake.api_key, base_url=ffake.base_url, clock=clock,
                             poll=aa.PollPolicy(jitter=0))
        results: list[aa.BatchResult] = []

        async def consume() -> None:
            async for r in s.characters.resynthesize_many(ids):
                results.append(r)

        task = asyncio.create_task(consume())
        # 50 API seconds in: 12 sent at once (finished at 30 s, seen at 41.4 s), 5 more
        # paced at 10 s..50 s (the first two finish at 40 and 50 s, but their next polls
        # are at 51.4 and 61.4 s), 13 waiting for tokens.
        await on_virtual_time(clock, ffake, clock.sleep(50))
        await asyncio.wait_for(s.aclose(), timeout=2)
        await asyncio.wait_for(task, timeout=2)
        charged = {c.character_id for c in ffake.ledger}
    assert len(results) == 30
    assert len(charged) == 17
    # Closing mid-batch ends what was still running with SessionClosedError.
    closed = [r for r in results if not r.ok]
    assert len(closed) == 18
    assert closed and all(isinstance(r.error, aa.SessionClosedError) for r in closed)
    # A charged id says so (key, last state); an unsent one says it was not charged.
    for result in closed:
        assert result.error is not None
        if result.character_id in charged:
            # (Its last state is there when its answer arrived before the close.)
            assert result.error.may_have_been_processed and result.error.idempotency_key
        else:
            assert "not charged" in str(result.error) or result.error.may_have_been_processed
    assert sdk_tasks() == []


@pytest.mark.parametrize(("ids", "kwargs", "error"), [
    ("char_1", {}, TypeError),
    (["a", "a"], {}, ValueError),
    (["a/../b", ".."], {}, ValueError),
    (["a"], {"concurrency": 0}, ValueError),
    (["a"], {"timeout": -1}, ValueError),
    (["a"], {"auto_save": "yes"}, TypeError),
    (["a"], {"progress": 3}, TypeError),
])
async def test_many_validates_before_any_request(fs: aa.AurousSession, ffake: FakeAurousServer,
                                                 ids: object, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        fs.characters.resynthesize_many(ids, **kwargs)  # type: ignore[arg-type]
    assert ffake.requests == []


def test_duration_estimate_bootstraps_then_tracks_a_quantile() -> None:
    estimate = DurationEstimate(quantile=0.7, bootstrap=3, step=0.1)
    assert estimate.value is None
    estimate.first_poll(done=True)  # ignored until bootstrapped
    for seconds in (40, 60, 50):
        estimate.completed(seconds)
    assert estimate.value == 50
    estimate.first_poll(done=False)  # too early: grow by q * step
    assert estimate.value == pytest.approx(50 * (1 + 0.1 * 0.7))
    before = estimate.value
    estimate.first_poll(done=True)  # long enough: shrink by (1 - q) * step
    assert estimate.value == pytest.approx(before * (1 - 0.1 * 0.3))


async def _polls_per_synthesis(clock: FakeClock, policy: aa.PollPolicy,
                                scheduler: PollScheduler | None = None,
                                rounds: int = 1, count: int = 6) -> float:
    """Run ``rounds`` waves of ``count`` 30-second syntheses on virtual time through one
    poll scheduler; the GETs per synthesis of the last wave."""
    started: dict[str, float] = {}
    fetches: list[str] = []

    async def fetch(cid: str) -> aa.Character:
        fetches.append(cid)
        done = clock.monotonic() - started[cid] >= 30
        return aa.Character(id=cid, status=S.REVIEWING if done else S.SYNTHESIZING)

    scheduler = scheduler or PollScheduler(fetch, policy, clock, rng=random.Random(7))
    for wave in range(rounds):
        before = len(fetches)

        async def one(cid: str) -> None:
            started[cid] = clock.monotonic()
            known = aa.Character(id=cid, status=S.SYNTHESIZING)
            async for _ in watch_character(scheduler, _never_called, cid, clock=clock,
                                           auto_save=False, deadline=None, known=known):
                pass

        tasks = [asyncio.create_task(one(f"char_{wave}_{n}")) for n in range(count)]
        await clock.run_until_idle()
        await asyncio.gather(*tasks)
    return (len(fetches) - before) / count


async def test_a_session_learns_to_poll_once_per_synthesis(clock: FakeClock) -> None:
    """Defect guarded: every synthesis polled on the fixed 2 s schedule (~6 GETs for 30 s)
    although the session has seen how long syntheses take. Virtual time: no jitter."""
    learned = await _polls_per_synthesis(clock, aa.PollPolicy(), rounds=2)
    assert learned <= 1.5
    plain = await _polls_per_synthesis(clock, aa.PollPolicy(learn=False), rounds=2)
    assert plain >= 5


_SLOW = ("_8", "_9")  # of each wave of 10, these take 40 s, the others 30 s
_WAVES = itertools.count()


async def _late_syntheses_polls(
    clock: FakeClock, policy: aa.PollPolicy, waves: int, *, fail_first: bool = False,
    scheduler: PollScheduler | None = None, gaps: list[float] | None = None,
) -> tuple[float, float, PollScheduler]:
    """Waves of 10 syntheses on virtual time, 8 taking 30 s and 2 taking 40 s, started
    10 s apart: the GETs per fast and per slow synthesis of the last wave.
    ``fail_first``: each one's first poll is a 503; ``gaps`` gets the time between each
    two polls of a synthesis."""
    started: dict[str, float] = {}
    fetches: list[str] = []
    last_poll: dict[str, float] = {}

    async def fetch(cid: str) -> aa.Character:
        fetches.append(cid)
        if gaps is not None and cid in last_poll:
            gaps.append(clock.monotonic() - last_poll[cid])
        last_poll[cid] = clock.monotonic()
        if fail_first and fetches.count(cid) == 1:
            raise aa.ServerError("try again", status=503)
        took = 40 if cid.endswith(_SLOW) else 30
        done = clock.monotonic() - started[cid] >= took
        return aa.Character(id=cid, status=S.REVIEWING if done else S.SYNTHESIZING)

    scheduler = scheduler or PollScheduler(fetch, policy, clock, rng=random.Random(7))
    scheduler._fetch = fetch
    for _ in range(waves):
        before = len(fetches)

        async def one(wave: int, n: int) -> None:
            await clock.sleep(10 * n)  # one started every 10 s, as in a fan-out
            cid = f"char_{wave}_{n}"
            started[cid] = clock.monotonic()
            known = aa.Character(id=cid, status=S.SYNTHESIZING)
            async for _ in watch_character(scheduler, _never_called, cid, clock=clock,
                                           auto_save=False, deadline=None, known=known):
                pass

        wave = next(_WAVES)  # ids unique across calls on one scheduler
        tasks = [asyncio.create_task(one(wave, n)) for n in range(10)]
        await clock.run_until_idle()
        await asyncio.gather(*tasks)
    slow = sum(cid.endswith(_SLOW) for cid in fetches[before:])
    return (len(fetches) - before - slow) / 8, slow / 2, scheduler


async def test_a_synthesis_still_running_at_the_estimate_is_polled_when_late_ones_end(
    clock: FakeClock,
) -> None:
    """Defect guarded: a synthesis the learned first poll found running was then polled
    on the policy's short steps (3 s, 4.5 s, 6.75 s ...): 4 GETs for each slow one. Its
    next poll is now timed by what the late ones took, which those polls teach in turn.
    Virtual time: no jitter."""
    policy = aa.PollPolicy(jitter=0)
    _, _, scheduler = await _late_syntheses_polls(clock, policy, waves=4)
    assert scheduler.late_estimate.value is not None  # learned from the slow ones' ends
    bootstrapped = scheduler.late_estimate.value
    waves = [await _late_syntheses_polls(clock, policy, waves=1, scheduler=scheduler)
             for _ in range(8)]
    assert sum(fast for fast, _, _ in waves) / 8 <= 1.2
    assert sum(slow for _, slow, _ in waves) / 8 <= 2.5  # (4 on the policy's steps)
    assert scheduler.estimate.value is not None and scheduler.estimate.value < 36
    assert scheduler.late_estimate.value != bootstrapped  # taught by its own polls


async def test_only_a_poll_an_estimate_timed_teaches_it(clock: FakeClock) -> None:
    """Defect guarded: the first *successful* poll taught the estimate even when it was
    a retry after a failed one, seconds later than the estimate had timed it: each
    outage made the estimate think it was long enough and shrink."""
    policy = aa.PollPolicy(jitter=0)
    scheduler = PollScheduler(_never_called, policy, clock, rng=random.Random(7))
    scheduler.estimate.value = 25.0  # as if learned
    await _late_syntheses_polls(clock, policy, waves=1, fail_first=True, scheduler=scheduler)
    # Every first poll (at the estimate) failed; the retries found the syntheses running
    # (at 28 s) and then done: none of it may move the estimate.
    assert scheduler.estimate.value == 25.0
    await _late_syntheses_polls(clock, policy, waves=1, scheduler=scheduler)
    assert scheduler.estimate.value > 25.0  # (polls it timed do teach it)


async def test_a_late_estimate_its_polls_cannot_reach_comes_back(clock: FakeClock) -> None:
    """Defect guarded: a late estimate more than ``max_interval`` past the first (as one
    bootstrapped from slow polls can be) timed no poll, so no poll ever taught it: the
    feature stayed off for the session. Polls on the policy's steps now teach it too."""
    policy = aa.PollPolicy(jitter=0)
    scheduler = PollScheduler(_never_called, policy, clock, rng=random.Random(7))
    scheduler.estimate.value, scheduler.late_estimate.value = 30.0, 48.0  # as if learned
    gaps: list[float] = []
    await _late_syntheses_polls(clock, policy, waves=6, scheduler=scheduler, gaps=gaps)
    assert scheduler.late_estimate.value < 30.0 + policy.max_interval
    assert max(gaps) <= policy.max_interval  # (out of reach, it timed no poll)


async def test_a_late_poll_never_comes_after_a_watchers_deadline(clock: FakeClock) -> None:
    """Defect guarded: the late estimate timed the next poll 14 s on while the watcher's
    deadline was 10 s away: a synthesis done in time was reported as a timeout."""
    started = clock.monotonic()
    seen: list[float] = []

    async def fetch(cid: str) -> aa.Character:
        seen.append(clock.monotonic() - started)
        done = clock.monotonic() - started >= 35
        return aa.Character(id=cid, status=S.REVIEWING if done else S.SYNTHESIZING)

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0), clock)
    scheduler.estimate.value, scheduler.late_estimate.value = 30.0, 44.0  # as if learned
    statuses = []

    async def watch() -> None:
        async for update in watch_character(
            scheduler, _never_called, "char_1", clock=clock, auto_save=False,
            deadline=started + 40, known=aa.Character(id="char_1", status=S.SYNTHESIZING),
        ):
            statuses.append(update.status)

    task = asyncio.create_task(watch())
    await clock.run_until_idle()
    await task
    assert statuses[-1] == S.REVIEWING
    assert seen == [30.0, 33.0, 37.5]  # the policy's steps, as before the late estimate


async def test_without_learning_the_estimate_stays_what_syntheses_take(
    clock: FakeClock,
) -> None:
    """Defect guarded: with ``PollPolicy(learn=False)`` every first poll (2 s in) taught
    the estimate "too short", so it climbed to its 600 s cap, and flows then refused any
    resynthesize with less than 600 s of its timeout left as unable to cover a typical
    synthesis."""
    policy = aa.PollPolicy(learn=False, jitter=0)
    _, _, scheduler = await _late_syntheses_polls(clock, policy, waves=5)
    assert scheduler.estimate.value is not None and scheduler.estimate.value < 60


async def test_a_pushed_poll_does_not_teach_the_estimate(clock: FakeClock) -> None:
    """A webhook push makes the character polled at once, long before the estimate:
    finding it running then says nothing about how long syntheses take."""

    async def fetch(cid: str) -> aa.Character:
        return aa.Character(id=cid, status=S.SYNTHESIZING)

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0), clock)
    scheduler.estimate.value = 30.0
    sub = scheduler.subscribe("char_1", aa.Character(id="char_1", status=S.SYNTHESIZING))
    await clock.advance(10)
    scheduler.push("char_1")
    await sub.wait()
    assert sub.polls == 1  # the pushed poll, which found it running
    assert scheduler.estimate.value == 30.0
    scheduler.unsubscribe(sub)


async def test_no_late_poll_is_timed_while_webhooks_arrive(clock: FakeClock) -> None:
    """Defect guarded: with webhook deliveries arriving (polls only a safety net), a
    synthesis still running at its first poll was polled again at the late estimate, a
    GET the push would have made unneeded."""
    start, polled_at = clock.monotonic(), []

    async def fetch(cid: str) -> aa.Character:
        polled_at.append(clock.monotonic() - start)
        return aa.Character(id=cid, status=S.SYNTHESIZING)

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0), clock)
    scheduler.estimate.value, scheduler.late_estimate.value = 30.0, 40.0  # as if learned
    sub = scheduler.subscribe("char_1", aa.Character(id="char_1", status=S.SYNTHESIZING))
    sub.wait()  # a watcher waits (not parked); the future itself is not needed here
    await clock.advance(10)
    scheduler.expect_pushes()  # a receiver feeds this session from now on
    await clock.advance(60)
    assert polled_at == [30.0]  # the timed first poll; next, the safety net's, far later
    scheduler.unsubscribe(sub)


async def _never_called(cid: str) -> aa.Character:
    raise AssertionError("not called")


async def test_learned_estimate_is_bounded_and_recovers(clock: FakeClock) -> None:
    """Defect guarded: after slow syntheses the first poll was planned past the caller's
    deadline (0 GETs, then WatchTimeoutError), and instant ones shrank it to ~1e-165 s."""
    estimate = DurationEstimate(minimum=1.0, maximum=600.0)
    for _ in range(5):
        estimate.completed(10_000.0)
    assert estimate.value == 600.0
    for _ in range(10_000):
        estimate.first_poll(done=True)
    assert estimate.value == 1.0
