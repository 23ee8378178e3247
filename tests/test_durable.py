"""Durable batches (issue 13): a fan-out with a journal survives restarts — even SIGKILL
at the worst moment — and never charges an id twice."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, Fault, FaultKind, ScaledClock

from .fork_worker import spawn

RESYNTH = "POST /v1/characters/{character_id}/resynthesize"


def _session(fake: FakeAurousServer, clock: aa.Clock) -> aa.AurousSession:
    return aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock, timeout=3600)


async def test_a_finished_batch_is_read_back_from_the_journal(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path
) -> None:
    ids = [ffake.add_character() for _ in range(5)]
    async with aa.SQLiteJournal(tmp_path / "b.db") as journal, _session(ffake, fast) as s:
        first = [r async for r in s.characters.resynthesize_many(
            ids, auto_save=True, journal=journal, batch="spring")]
        assert all(r.ok and not r.from_journal for r in first)
        sent = len(ffake.requests)
        again = [r async for r in s.characters.resynthesize_many(
            ids, auto_save=True, journal=journal, batch="spring")]
    assert len(ffake.requests) == sent  # nothing sent: every id came from the journal
    assert all(r.from_journal and r.ok for r in again)
    assert {r.character_id: r.character.status for r in again if r.character} == \
        dict.fromkeys(ids, aa.CharacterStatus.READY)
    assert len(ffake.ledger) == 5


async def test_an_interrupted_batch_resumes_charging_each_id_once(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path
) -> None:
    """Defect guarded: a 200-id fan-out interrupted after 81 charges, run again, charged
    all 68 already-charged characters a second time."""
    ids = [ffake.add_character() for _ in range(20)]
    async with aa.SQLiteJournal(tmp_path / "b.db") as journal, _session(ffake, fast) as s:
        async with s.characters.resynthesize_many(ids, auto_save=True, journal=journal,
                                                  batch="spring") as batch:
            async for _ in batch:
                if len(ffake.ledger) >= 8:
                    break  # Ctrl-C, a deploy
        results = [r async for r in s.characters.resynthesize_many(
            ids, auto_save=True, journal=journal, batch="spring")]
    assert sorted(r.character_id for r in results) == sorted(ids)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(len(ffake.charges_for(cid)) == 1 for cid in ids)
    assert all(ffake.character(cid)["status"] == "ready" for cid in ids)
    assert any(r.from_journal for r in results)


async def test_a_second_live_runner_is_refused_at_once(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path
) -> None:
    ids = [ffake.add_character() for _ in range(3)]
    journal, other = aa.SQLiteJournal(tmp_path / "b.db"), aa.SQLiteJournal(tmp_path / "b.db")
    async with journal, other, _session(ffake, fast) as s, \
            s.characters.resynthesize_many(ids, journal=journal, batch="x") as first:
        await first.__anext__()
        with pytest.raises(aa.BatchInUseError) as info:
            await s.characters.resynthesize_many(ids, journal=other, batch="x").__anext__()
    assert 0 < info.value.expires_in <= 30


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"batch": "x"}, ValueError),
    ({"journal": "JOURNAL"}, ValueError),
    ({"journal": "JOURNAL", "batch": ""}, ValueError),
    ({"journal": "JOURNAL", "batch": "has space"}, ValueError),
    ({"journal": "JOURNAL", "batch": "x" * 201}, ValueError),
    ({"journal": object(), "batch": "x"}, TypeError),
])
async def test_bad_journal_arguments_fail_before_any_request(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path, kwargs: dict, error: type
) -> None:
    async with aa.SQLiteJournal(tmp_path / "b.db") as journal, _session(ffake, fast) as s:
        if kwargs.get("journal") == "JOURNAL":
            kwargs["journal"] = journal
        with pytest.raises(error):
            s.characters.resynthesize_many([ffake.add_character()], **kwargs)
    assert ffake.requests == []


async def test_an_unusable_journal_fails_before_any_paid_request(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(8192))
    ids = [ffake.add_character() for _ in range(3)]
    async with aa.SQLiteJournal(corrupt) as journal, _session(ffake, fast) as s:
        with pytest.raises(aa.JournalError):
            async for _ in s.characters.resynthesize_many(ids, journal=journal, batch="x"):
                pass
    assert ffake.requests_to(RESYNTH) == []


# -- killed with SIGKILL, then run again --------------------------------------------------------

_RUNNER = textwrap.dedent("""
    import asyncio, sys
    import aurous_async as aa

    class Later(aa.SystemClock):
        # The journal's Unix time, ahead by the lease lives of the runners killed before.
        def time(self) -> float:
            return super().time() + float(sys.argv[4])

    async def main() -> None:
        base_url, key, store, _, *ids = sys.argv[1:]
        if store.startswith("redis://"):
            journal = aa.RedisJournal.from_url(store, prefix="aurous:kill-test")
        else:
            journal = aa.SQLiteJournal(store, clock=Later())
        async with journal, aa.AurousSession(key, base_url=base_url, timeout=3600,
                                             clock=aa.ScaledClock(400)) as s:
            async for r in s.characters.resynthesize_many(ids, auto_save=True,
                                                          journal=journal, batch="kill"):
                print(r.character_id, r.ok, r.from_journal, flush=True)

    asyncio.run(main())
""")
LEASE_TTL = 30.0  # the journals' default


async def _run_until(fake: FakeAurousServer, store: str, ids: list[str],
                     kill_after_charges: int | None, life: int) -> int:
    """Run the batch in a child process (a fork of a Python that has imported the SDK:
    see ``fork_worker``), the ``life``-th runner of the batch; SIGKILL it once the fake
    has charged ``kill_after_charges`` (None: let it finish). Returns its exit code."""
    later = life * (LEASE_TTL + 1)
    child = await spawn(_RUNNER, fake.base_url, fake.api_key, store, str(later), *ids)
    if kill_after_charges is not None:
        for _ in range(6000):
            if len(fake.ledger) >= kill_after_charges or child.returncode is not None:
                break
            await asyncio.sleep(0.005)
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
    return await asyncio.wait_for(child.wait(), timeout=120)


async def _lapse_the_lease(store: str) -> None:
    """Let the lease of a killed runner lapse without waiting ``LEASE_TTL``: a SQLite
    runner's journal reads Unix time that much later each life (see ``_RUNNER``); Redis
    expires the lease key (``{prefix}:{<batch>}:lease``) as its TTL would."""
    if store.startswith("redis://"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(store)
        try:
            # (No key: the runner released its lease before the kill landed.)
            await client.pexpire("aurous:kill-test:{kill}:lease", 1)
        finally:
            await client.aclose()


async def _kill_and_resume(store: str, kill_points: list[int]) -> None:
    # 400x on both sides (as in _RUNNER): a synthesis takes 75 ms, a token past the burst
    # 25 ms, and a held POST 0.1 real s (40 API s).
    clock = ScaledClock(400)
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        ids = [fake.add_character() for _ in range(14)]
        # A paid POST held by the server after it charged: the kill can land right there.
        fake.faults.add(Fault(FaultKind.SLOW, route=RESYNTH, every=4, delay=0.1))
        for life, point in enumerate(kill_points):
            # Killed mid-batch (not refused the batch, nor finished before the kill).
            assert await _run_until(fake, store, ids, point, life) == -signal.SIGKILL
            await _lapse_the_lease(store)
        assert await _run_until(fake, store, ids, None, len(kill_points)) == 0
        # Every id charged exactly once, under one key, and saved.
        for cid in ids:
            charges = fake.charges_for(cid)
            assert len(charges) == 1, (cid, charges)
            keys = {r.headers.get("Idempotency-Key") for r in fake.requests_to(RESYNTH)
                    if r.path.split("/")[3] == cid}
            assert len(keys) == 1, (cid, keys)
            assert fake.character(cid)["status"] == "ready"
        # Each restart may trip the cold-start probe, and nothing else.
        assert fake.rate_limited.get("characters_synthesize", 0) <= len(kill_points)


async def test_sigkill_at_many_points_then_resume_charges_each_id_once(tmp_path: Path) -> None:
    await _kill_and_resume(str(tmp_path / "kill.db"), [1, 3, 6, 10, 13])


async def test_sigkill_with_the_redis_journal(redis_url: str) -> None:
    await _kill_and_resume(redis_url, [2, 7, 12])


async def test_a_watch_that_timed_out_is_watched_again_on_resume(
    ffake: FakeAurousServer, fast: ScaledClock, tmp_path: Path
) -> None:
    """Defect guarded: a charged id whose watch timed out was journaled `failed`, so a
    resumed batch reported the timeout again instead of following the character."""
    ffake.synthesis_seconds = 10**6
    ids = [ffake.add_character() for _ in range(2)]
    async with aa.SQLiteJournal(tmp_path / "b.db") as journal, _session(ffake, fast) as s:
        first = [r async for r in s.characters.resynthesize_many(
            ids, journal=journal, batch="slow", timeout=100, min_time_left=0)]
        assert all(isinstance(r.error, aa.WatchTimeoutError) for r in first)
        for cid in ids:
            ffake.finish_synthesis(cid)
        again = [r async for r in s.characters.resynthesize_many(
            ids, auto_save=True, journal=journal, batch="slow")]
    assert all(r.ok and not r.from_journal for r in again), [r.error for r in again]
    assert all(len(ffake.charges_for(cid)) == 1 for cid in ids)
