"""``fake.session()`` and the ``fake_aurous`` fixture's fast defaults (issue 16, item 1)."""

from __future__ import annotations

import time

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, FakeClock, ScaledClock, SystemClock
from aurous_async.testing.pytest_plugin import FIXTURE_TIME_SCALE

from .conftest import on_virtual_time


async def test_a_wait_under_the_fixture_is_fast(fake_aurous: FakeAurousServer) -> None:
    """Guards: a fixture test waiting out a synthesis in real seconds (54 s in issue 16).
    Wall time is the point here, so it is measured, loosely, as an upper bound."""
    cid = fake_aurous.add_character(status="ready")
    started = time.perf_counter()
    async with fake_aurous.session() as s:
        await s.characters.resynthesize(cid)
        character = await s.characters.wait(cid)
    assert character.status == "reviewing"
    assert time.perf_counter() - started < 2.0


async def test_client_and_fake_agree_on_the_buckets(clock: FakeClock) -> None:
    """Guards: a session from ``fake.session()`` that does not pace to the fake's buckets
    (pacing off, other limits, another clock): 20 resynthesizes are 12 of burst and 8
    paced at 6 a minute, and none of them may meet a 429. On virtual time, where a round
    trip takes none of it, so the pacing is exact: 8 refills are 80 API seconds."""
    async with FakeAurousServer(clock=clock, synthesis_seconds=45) as fake:
        ids = [fake.add_character(status="ready") for _ in range(20)]
        async with fake.session() as s:

            async def resynthesize_all() -> list[aa.BatchResult]:
                return [r async for r in s.characters.resynthesize_many(ids)]

            results = await on_virtual_time(clock, fake, resynthesize_all())
            posts = [r.at for r in fake.requests if r.route.endswith("/resynthesize")]
    assert sorted(r.character_id for r in results) == sorted(ids)
    assert dict(fake.rate_limited) == {}
    assert all(r.ok for r in results), [repr(r.error) for r in results if not r.ok]
    assert len(fake.ledger) == 20
    assert len(posts) == 20
    assert posts[-1] - posts[0] == pytest.approx(80, abs=1e-6)


def test_the_fixture_runs_on_fast_time_by_default(fake_aurous: FakeAurousServer) -> None:
    """Guards: the fixture's default drifting back to real time."""
    assert isinstance(fake_aurous.clock, ScaledClock)
    assert fake_aurous.clock.scale == FIXTURE_TIME_SCALE
    # A synthesis is a few dozen milliseconds of real time.
    assert fake_aurous.synthesis_seconds / FIXTURE_TIME_SCALE < 0.1


@pytest.mark.aurous_fake(clock=FakeClock())
def test_a_marker_clock_replaces_the_default_scale(fake_aurous: FakeAurousServer) -> None:
    """Guards: a marker's own clock clashing with the default time scale (a ValueError)."""
    assert isinstance(fake_aurous.clock, FakeClock)


async def test_session_shares_the_fakes_clock_and_points_at_it() -> None:
    """Guards: a session on another clock, URL or key than its fake's."""
    async with FakeAurousServer(time_scale=50) as fake, fake.session() as s:
        assert s.clock is fake.clock
        assert s.base_url == fake.base_url
        assert (await s.balance()).credits == 1000
    async with FakeAurousServer(time_scale=5) as fake:
        team = fake.add_team(credits=7)
        own = SystemClock()
        async with fake.session(api_key=team.api_key, clock=own, timeout=5.0) as s:
            assert s.clock is own
            assert (await s.balance()).credits == 7


async def test_session_on_real_time_keeps_the_default_clock() -> None:
    """Guards: a real-time fake handing its sessions a clock of their own, which would
    split them from the process-wide limiter other sessions share."""
    async with FakeAurousServer() as fake, fake.session() as s, \
            aa.AurousSession(fake.api_key, base_url=fake.base_url) as plain:
        assert s.clock is plain.clock


def test_session_needs_a_started_fake() -> None:
    """Guards: a session pointed at an empty base URL."""
    with pytest.raises(RuntimeError, match="start the fake first"):
        FakeAurousServer().session()
