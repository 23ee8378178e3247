"""Money and quota at the boundaries (issue 12, items 1-4, 10-13): callers who leave,
threads and event loops, restarts, charged calls that look failed, stuck POSTs."""

from __future__ import annotations

import asyncio
import textwrap
import threading

import aiohttp
import pytest

import aurous_async as aa
from aurous_async.testing import (
    BucketLimit,
    FakeAurousServer,
    FakeClock,
    Fault,
    FaultKind,
    ScaledClock,
)

from .conftest import on_virtual_time, sdk_tasks
from .fork_worker import spawn

RESYNTH = "POST /v1/characters/{character_id}/resynthesize"
GET_ONE = "GET /v1/characters/{character_id}"


# -- 1. a consumer that leaves stops paying ------------------------------------------------


async def test_a_bound_iterator_left_with_break_sends_no_more_paid_posts(
    fake: FakeAurousServer, clock: FakeClock
) -> None:
    """Defect guarded: `batch = resynthesize_many(ids); async for r in batch: break` kept
    charging (12 at the break, 40 five API-minutes later) while `batch` stayed referenced.
    On virtual time: the clock jumps from timer to timer once every request is answered."""
    ids = [fake.add_character() for _ in range(40)]
    async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                timeout=3600) as s:
        dispatched: list[tuple[bool, str | None]] = []
        left = False
        batch = s.characters.resynthesize_many(
            ids, progress=lambda p: dispatched.append((left, p.character_id))
            if p.state == "dispatched" else None)

        async def first_result() -> None:
            nonlocal left
            async for _ in batch:
                left = True
                break

        await on_virtual_time(clock, fake, first_result())
        # 300 API seconds: the bucket would allow 30 more.
        await on_virtual_time(clock, fake, clock.sleep(300))
        assert batch is not None  # still referenced: no finaliser helped
        # POSTs already on the wire at the break land and are charged; none is sent after.
        assert [cid for after, cid in dispatched if after] == []
        assert len(fake.ledger) == len(dispatched) < len(ids)
        assert len(fake.requests_to(RESYNTH)) == len(dispatched)
        await batch.aclose()


async def test_the_batch_as_a_context_manager_cancels_everything_on_exit(
    fake: FakeAurousServer, clock: FakeClock
) -> None:
    """On virtual time, as above: nothing is sent in the 200 API seconds after the exit."""
    ids = [fake.add_character() for _ in range(20)]
    async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                timeout=3600) as s:

        async def leave_at_once() -> None:
            async with s.characters.resynthesize_many(ids) as batch:
                async for _ in batch:
                    break

        await on_virtual_time(clock, fake, leave_at_once())
        assert sdk_tasks() == [] or all("poll scheduler" in t.get_name() for t in sdk_tasks())
        # A POST cancelled on the wire may still land.
        await on_virtual_time(clock, fake, clock.sleep(20))
        sent = len(fake.requests_to(RESYNTH))
        await on_virtual_time(clock, fake, clock.sleep(200))
        assert len(fake.requests_to(RESYNTH)) == sent


async def test_a_cancelled_consumer_leaks_no_task(ffake: FakeAurousServer, fast: ScaledClock) -> None:
    """Defect guarded (item 10): each cancelled consumer left a pending Queue.get task.
    The batches stay referenced, so no finaliser cleans up after a consumer that did
    not; and nothing can end a batch on its own (no synthesis ends, and each consumer
    has characters of its own), so each consumer is still iterating when it is
    cancelled however long the machine takes to come back from the pause."""
    ffake.synthesis_seconds = 10**6
    batches: list[object] = []
    async with aa.AurousSession(ffake.api_key, base_url=ffake.base_url, clock=fast,
                                timeout=3600) as s:
        async def consume() -> None:
            # New characters each time: ones an earlier consumer left synthesizing would
            # refuse a resynthesize at once, and the batch would end before its cancel.
            ids = [ffake.add_character() for _ in range(6)]
            batch = s.characters.resynthesize_many(ids)
            batches.append(batch)
            async for _ in batch:
                pass

        for _ in range(5):
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # No queue getter (the old leak) and no task of a batch is left behind: the
        # cancelled consumer ended its batch before its cancellation reached us.
        leaked = [t for t in asyncio.all_tasks()
                  if getattr(t.get_coro(), "__qualname__", "").startswith("Queue.")
                  or "resynthesize_many" in t.get_name()]
        assert leaked == []
        assert len(batches) == 5


# -- 2. buckets shared across threads and event loops --------------------------------------

# Fast buckets, the same on both sides, so the sharing shows within a third of a
# second: 30 a second after a burst of 4 (12 calls: 8 refills, ~0.27 s).
SERVER_FAST = {"characters_synthesize": BucketLimit(1800, 4)}
CLIENT_FAST = aa.RateLimits(characters_synthesize=aa.RateLimit(1800, 60.0, 4))


def _run_in_loop(fake: FakeAurousServer, ids: list[str], limits: aa.RateLimits,
                 clock: aa.Clock | None = None) -> None:
    async def main() -> None:
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, rate_limits=limits,
                                    clock=clock) as s:
            await asyncio.gather(*(s.characters.resynthesize(cid) for cid in ids))

    asyncio.run(main())


def test_two_threads_each_running_asyncio_run_share_one_bucket() -> None:
    """Defect guarded: each thread's loop had its own bucket, 12 server 429s."""
    with FakeAurousServer(buckets=SERVER_FAST).run_in_thread() as fake:
        ids = [fake.add_character() for _ in range(12)]
        threads = [threading.Thread(target=_run_in_loop, args=(fake, ids[i::2], CLIENT_FAST))
                   for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(fake.ledger) == 12
        assert sum(fake.rate_limited.values()) == 0


@pytest.mark.parametrize("variant", ["same", "other_get_bucket", "new_system_clock"])
def test_sequential_asyncio_runs_share_one_bucket(variant: str) -> None:
    """Defect guarded: four asyncio.run() calls (a cron loop, a sync view) each started
    with a full bucket; so did a session with other GET limits or its own SystemClock."""
    with FakeAurousServer(buckets=SERVER_FAST).run_in_thread() as fake:
        ids = [fake.add_character() for _ in range(12)]
        for run in range(4):
            limits, clock = CLIENT_FAST, None
            if run % 2 and variant == "other_get_bucket":
                limits = aa.RateLimits(characters_synthesize=CLIENT_FAST.characters_synthesize,
                                       characters_get=aa.RateLimit(10, 60.0, 5))
            if run % 2 and variant == "new_system_clock":
                clock = aa.SystemClock()
            _run_in_loop(fake, ids[run * 3:run * 3 + 3], limits, clock)
        assert len(fake.ledger) == 12
        assert sum(fake.rate_limited.values()) == 0


# -- 3. cold start ----------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import asyncio, sys
    import aurous_async as aa

    async def main() -> None:
        base_url, key, *ids = sys.argv[1:]
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # the parent empties the server's bucket, then says go
        limits = aa.RateLimits(characters_synthesize=aa.RateLimit(6, 60.0, 4))
        async with aa.AurousSession(key, base_url=base_url, rate_limits=limits,
                                    clock=aa.ScaledClock(100)) as s:
            await asyncio.gather(*(s.characters.resynthesize(cid) for cid in ids))

    asyncio.run(main())
""")


async def test_a_restarted_process_trips_at_most_the_cold_start_probe() -> None:
    """Defect guarded: a new process burst its whole local bucket into a server bucket
    its previous life had emptied (4 x 429 here; 12 with the real burst)."""
    clock = ScaledClock(100)  # one token per 10 API s = 0.1 real s (both sides)
    async with FakeAurousServer(clock=clock, buckets={"characters_synthesize": BucketLimit(6, 4)}) as fake:
        ids = [fake.add_character() for _ in range(7)]
        # A new process (forked from a Python that has imported the SDK: fork_worker).
        child = await spawn(_CHILD, fake.base_url, fake.api_key, *ids[3:], stdin=True)
        assert child.stdin is not None and child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
        # The previous life: the server's bucket spent to the last token.
        async with aiohttp.ClientSession() as http:
            for cid in ids[:3]:
                url = f"{fake.base_url}/v1/characters/{cid}/resynthesize"
                async with http.post(url, json={}, headers={"X-Api-Key": fake.api_key,
                                                            "Idempotency-Key": cid}) as r:
                    assert r.status == 200
        assert fake.rate_limited.get("characters_synthesize", 0) == 0
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        assert await asyncio.wait_for(child.wait(), 60) == 0
        assert len(fake.ledger) == 7
        assert fake.rate_limited.get("characters_synthesize", 0) <= 1


# -- 4. charged, but told it failed -------------------------------------------------------------


async def test_an_error_of_a_paid_call_says_it_may_have_been_charged(
    sfake: FakeAurousServer, session: aa.AurousSession
) -> None:
    """Defect guarded: first answer lost, retries get 503s -> a bare ServerError, and the
    obvious retry charged a second time."""
    cid = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.DROP, route=RESYNTH, nth=1))
    sfake.faults.add(Fault(FaultKind.JSON_503, route=RESYNTH))
    with pytest.raises(aa.ServerError) as info:
        await session.characters.resynthesize(cid)
    error = info.value
    assert error.may_have_been_processed is True
    assert error.idempotency_key and error.idempotency_key in str(error)
    assert "same idempotency_key" in str(error)
    assert len(sfake.charges_for(cid)) == 1
    sfake.faults.clear()
    again = await session.characters.resynthesize(cid, idempotency_key=error.idempotency_key)
    assert again.status is aa.CharacterStatus.SYNTHESIZING
    assert len(sfake.charges_for(cid)) == 1  # the retry with the same key was replayed


async def test_a_refused_paid_call_says_it_was_not_processed(
    sfake: FakeAurousServer, session: aa.AurousSession
) -> None:
    with pytest.raises(aa.NotFoundError) as info:
        await session.characters.resynthesize("char_missing")
    assert info.value.may_have_been_processed is False
    assert info.value.idempotency_key is not None


# -- 13. a stuck in-flight POST does not burn the paid bucket ----------------------------------


async def test_waiting_for_our_own_running_post_spends_no_paid_tokens() -> None:
    """Defect guarded: each re-check of our in-flight key (a 409) took a
    characters_synthesize token: a whole burst on one stuck call."""
    clock = ScaledClock(100)
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        cid = fake.add_character()
        # The first attempt takes 0.3 real s (30 API s) on the server; the client gives
        # up after 0.05 s and retries into the key still held by that first attempt.
        fake.faults.add(Fault(FaultKind.SLOW, route=RESYNTH, nth=1, delay=0.3))
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=0.05) as s:
            character = await s.characters.resynthesize(cid)
        assert character.status is aa.CharacterStatus.SYNTHESIZING
        assert len(fake.charges_for(cid)) == 1
        # The first attempt and one retry that met the 409; then free GETs only.
        assert len(fake.requests_to(RESYNTH)) <= 3
        assert len(fake.requests_to(GET_ONE)) >= 1


# -- 11, 12, E: misuse caught before anything is sent --------------------------------------------


async def test_watch_and_wait_on_a_closed_session_raise_session_closed(
    sfake: FakeAurousServer, auto_clock: FakeClock
) -> None:
    """Defect guarded: a bare RuntimeError from watch()/wait() on a closed session."""
    cid = sfake.add_character()
    s = aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock)
    await s.aclose()
    with pytest.raises(aa.SessionClosedError):
        await s.characters.wait(cid)
    with pytest.raises(aa.SessionClosedError):
        async for _ in s.characters.watch(cid):
            pass
    assert sfake.requests == []


def test_rates_that_under_or_overflow_are_refused() -> None:
    """Defect guarded: RateLimit(1e-200, 1e200, 1) passed, then acquire() divided by 0."""
    with pytest.raises(ValueError, match="per second"):
        aa.RateLimit(1e-200, 1e200, 1)
    with pytest.raises(ValueError, match="per second"):
        aa.RateLimit(1e200, 1e-200, 1)


def test_a_multiplier_that_overflows_the_schedule_is_refused() -> None:
    """Defect guarded: PollPolicy(multiplier=1e6) passed validation, overflowed, hung wait()."""
    with pytest.raises(ValueError, match="multiplier"):
        aa.PollPolicy(multiplier=1e6)
    assert aa.PollPolicy(multiplier=100, jitter=0).delay(1000) == 15.0


def test_unknown_enum_values_are_not_cached_without_bound() -> None:
    """Defect guarded: 200k distinct unknown statuses held 142-503 MB for ever."""
    table = aa.CharacterStatus._value2member_map_
    before = dict(table)
    try:
        values = [aa.CharacterStatus(f"mystery-{n}") for n in range(5_000)]
        assert all(not v.is_known and v == f"mystery-{n}" for n, v in enumerate(values))
        assert len(table) - len(before) <= 64
    finally:
        # The table is the process's: left full, a later test's unknown value (one
        # object per value while there is room) would not be cached.
        table.clear()
        table.update(before)


async def test_a_batch_left_early_still_saves_what_it_charged(
    ffake: FakeAurousServer, fast: ScaledClock
) -> None:
    """Defect guarded: with auto_save=True, characters charged by a batch left with
    `break` stayed in `reviewing`, unsaved."""
    ids = [ffake.add_character() for _ in range(8)]
    async with aa.AurousSession(ffake.api_key, base_url=ffake.base_url, clock=fast,
                                timeout=3600) as s:
        async with s.characters.resynthesize_many(ids, auto_save=True) as batch:
            async for _ in batch:
                break
        for _ in range(400):
            if not s._parts.saves.pending:
                break
            await asyncio.sleep(0.01)
        charged = {c.character_id for c in ffake.ledger}
        assert charged
        assert all(ffake.character(cid)["status"] == "ready" for cid in charged)
