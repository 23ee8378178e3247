"""What users of the big API SDKs reach for first (issue 16): failures that cannot be
missed, paid calls that will not time out uncharged, double clicks that do not pay twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, ScaledClock

S = aa.CharacterStatus
RESYNTH = "POST /v1/characters/{character_id}/resynthesize"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAurousServer]:
    async with FakeAurousServer(clock=ScaledClock(1000), synthesis_seconds=30) as server:
        yield server


@pytest.fixture
async def s(fake: FakeAurousServer) -> AsyncIterator[aa.AurousSession]:
    async with fake.session(timeout=3600) as session:
        yield session


# -- 9. failures that cannot be missed ----------------------------------------------------------


async def test_watch_ends_normally_on_failed_unless_asked_to_raise(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    """Defect guarded: a bot counted failed syntheses as successes (watch() just ended)."""
    cid = fake.add_character()
    fake.fail_next_synthesis(cid)
    updates = [u async for u in s.characters.resynthesize_and_watch(cid)]
    assert updates[-1].status is S.FAILED and updates[-1].terminal
    fake.fail_next_synthesis(cid)
    seen: list[aa.StatusUpdate] = []
    with pytest.raises(aa.SynthesisFailedError) as info:
        await _collect(s.characters.resynthesize_and_watch(cid, raise_on_failure=True), seen)
    assert seen[-1].status is S.FAILED  # yielded first, then raised
    assert info.value.character.id == cid
    ok = fake.add_character(status="synthesizing")
    statuses = [u.status async for u in s.characters.watch(ok, raise_on_failure=True,
                                                           auto_save=True)]
    assert statuses[-1] is S.READY  # no failure, no raise


# -- 8. deadline-aware paid calls ---------------------------------------------------------------


async def test_a_paid_call_that_cannot_finish_in_time_is_not_sent(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    """Defect guarded: with a short timeout, calls were charged and then timed out before
    their synthesis could finish."""
    cid = fake.add_character()
    with pytest.raises(aa.WatchTimeoutError, match="not charged"):
        async for _ in s.characters.resynthesize_and_watch(cid, timeout=20):
            pass
    assert fake.requests_to(RESYNTH) == [] and fake.ledger == []
    with pytest.raises(aa.WatchTimeoutError, match="not charged"):
        async for _ in s.characters.resynthesize_and_watch(cid, timeout=100,
                                                           min_time_left=120):
            pass
    async for _ in s.characters.resynthesize_and_watch(cid, timeout=300):
        pass  # a timeout that covers a typical synthesis goes through
    assert len(fake.ledger) == 1
    with pytest.raises(ValueError, match="min_time_left"):
        s.characters.resynthesize_and_watch(cid, min_time_left=-1)


async def test_min_time_left_zero_switches_the_guard_off(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    cid = fake.add_character()
    with pytest.raises(aa.WatchTimeoutError):
        async for _ in s.characters.resynthesize_and_watch(cid, timeout=20, min_time_left=0):
            pass
    assert len(fake.ledger) == 1  # sent (and charged): the caller asked for it


# -- 10. a double click is not a double charge ---------------------------------------------------


async def test_fifty_clients_resynthesizing_one_character_pay_once(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    """Defect guarded: 50 clients of one app resynthesizing the same character gave 8
    charges and 42 400s, each 400 spending a paid rate-limit token."""
    cid = fake.add_character()

    async def client() -> list[aa.CharacterStatus]:
        return [u.status async for u in s.characters.resynthesize_and_watch(cid, auto_save=True)]

    seen = await asyncio.gather(*(client() for _ in range(50)))
    assert len(fake.ledger) == 1
    assert len(fake.requests_to(RESYNTH)) == 1
    assert all(statuses[-1] is S.READY for statuses in seen)


async def test_join_false_sends_one_call_per_request(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    cid = fake.add_character()
    results = await asyncio.gather(
        *(_first(s.characters.resynthesize_and_watch(cid, join=False)) for _ in range(3)),
        return_exceptions=True)
    assert len(fake.requests_to(RESYNTH)) == 3
    assert len(fake.ledger) == 1  # the others were refused: it was already synthesizing
    assert sum(isinstance(r, aa.InvalidRequestError) for r in results) == 2


async def _first(updates: AsyncIterator[aa.StatusUpdate]) -> aa.StatusUpdate:
    async for update in updates:
        return update
    raise AssertionError("no update")


async def _collect(updates: AsyncIterator[aa.StatusUpdate], into: list[aa.StatusUpdate]) -> None:
    async for update in updates:
        into.append(update)


async def test_a_batch_sends_nothing_it_cannot_finish_in_time(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    ids = [fake.add_character() for _ in range(3)]
    results = [r async for r in s.characters.resynthesize_many(ids, timeout=20)]
    assert fake.ledger == [] and fake.requests_to(RESYNTH) == []
    assert all(isinstance(r.error, aa.WatchTimeoutError) and "not charged" in str(r.error)
               for r in results)
    done = [r async for r in s.characters.resynthesize_many(ids, timeout=20, min_time_left=0)]
    assert len(fake.ledger) == 3 and len(done) == 3
