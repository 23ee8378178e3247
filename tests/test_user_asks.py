"""What users of the big API SDKs reach for first (issue 16): failures that cannot be
missed, paid calls that will not time out uncharged, double clicks that do not pay twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, FakeClock, ScaledClock

from .conftest import on_virtual_time

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


# -- 3. per-call options ---------------------------------------------------------------------


async def test_with_options_is_a_view_sharing_pool_limiter_and_scheduler(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    view = s.with_options(timeout=5, max_retries=0, default_headers={"X-Trace": "t1"})
    assert (view.timeout, view.max_retries) == (5.0, 0)
    assert (s.timeout, s.max_retries) == (3600.0, 3)  # the parent is unchanged
    assert view.rate_limiter is s.rate_limiter
    assert view._parts.scheduler is s._parts.scheduler and view._parts.http is s._parts.http
    cid = fake.add_character()
    assert (await view.characters.get(cid)).id == cid
    assert fake.requests[-1].headers.get("X-Trace") == "t1"
    await view.aclose()  # closes nothing of the parent's
    assert (await s.characters.get(cid)).id == cid
    with pytest.raises(ValueError, match="timeout"):
        s.with_options(timeout=-1)


def test_timeout_and_retries_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "al_test_" + "e" * 32
    monkeypatch.setenv("AUROUS_TIMEOUT", "7")
    monkeypatch.setenv("AUROUS_MAX_RETRIES", "1")
    s = aa.AurousSession(key)
    assert (s.timeout, s.max_retries) == (7.0, 1)
    assert aa.AurousSession(key, timeout=60, max_retries=3).timeout == 60.0
    monkeypatch.setenv("AUROUS_TIMEOUT", "soon")
    with pytest.raises(aa.ConfigurationError, match="AUROUS_TIMEOUT"):
        aa.AurousSession(key)


# -- 4. raw responses ---------------------------------------------------------------------------


async def test_raw_responses_carry_status_headers_and_the_parsed_model(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    cid = fake.add_character()
    raw = await s.characters.with_raw_response.get(cid)
    assert raw.status == 200 and raw.request_id and raw.request_id.startswith("req_")
    assert "X-RateLimit-Remaining" in raw.headers
    assert raw.parse().id == cid
    first = await s.characters.with_raw_response.resynthesize(cid, idempotency_key="k-1")
    again = await s.characters.with_raw_response.resynthesize(cid, idempotency_key="k-1")
    assert first.headers.get("Aurous-Idempotent-Replayed") != "true"
    assert again.headers.get("Aurous-Idempotent-Replayed") == "true"
    assert (await s.with_raw_response.balance()).parse().available_credits >= 0
    with pytest.raises(AttributeError, match="no raw response"):
        s.characters.with_raw_response.watch  # noqa: B018 - a flow, not one call


# -- 6. headers ------------------------------------------------------------------------------


async def test_extra_headers_are_sent_but_never_replace_the_key(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    cid = fake.add_character()
    await s.characters.get(cid, extra_headers={"X-Request-Source": "bot"})
    assert fake.requests[-1].headers.get("X-Request-Source") == "bot"
    for bad in ({"X-Api-Key": "stolen"}, {"x-api-key": "stolen"}, {"Idempotency-Key": "k"},
                {"X-Ok": "a\r\nX-Api-Key: b"}):
        with pytest.raises(ValueError, match="extra_headers"):
            await s.characters.get(cid, extra_headers=bad)
    with pytest.raises(ValueError, match=r"(?i)x-api-key"):
        aa.AurousSession("al_test_" + "h" * 32, default_headers={"X-API-KEY": "other"})
    assert all(r.headers.get("X-Api-Key") == fake.api_key for r in fake.requests)


def test_aurous_log_switches_the_logger_on() -> None:
    import os
    import subprocess
    import sys

    code = ("import logging, aurous_async; "
            "logging.getLogger('aurous_async').debug('hello al_live_abcdefghijkl')")
    env = {**os.environ, "AUROUS_LOG": "debug"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert "hello" in done.stderr and "abcdefghijkl" not in done.stderr
    quiet = subprocess.run([sys.executable, "-c", code],
                           env={k: v for k, v in env.items() if k != "AUROUS_LOG"},
                           capture_output=True, text=True, timeout=60, check=True)
    assert "hello" not in quiet.stderr


# -- 7. a queued caller can say so ---------------------------------------------------------------


async def test_a_queued_update_comes_first_before_the_paid_call() -> None:
    """Defect guarded: a streaming endpoint waited minutes for its first byte while its
    call was queued for a rate-limit token."""
    # On virtual time: the next token (6/min: 10 s after the burst) is due only when the
    # clock is moved on, so nothing races the checks of what is still queued.
    clock = FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake, \
            fake.session(timeout=3600) as s:
        ids = [fake.add_character() for _ in range(13)]
        assert s.estimated_wait("characters_synthesize") == 0.0
        await asyncio.gather(*(s.characters.resynthesize(cid) for cid in ids[:12]))  # burst
        wait = s.estimated_wait("characters_synthesize")
        assert wait is not None and wait > 5  # 6/min: the next token is seconds away
        updates = s.characters.resynthesize_and_watch(ids[12], queued=True)
        # It comes at once, the clock standing still (a hang guard, not a measurement).
        first = await asyncio.wait_for(updates.__anext__(), timeout=10)
        assert first.queued and first.status == "queued" and first.previous_status is None
        assert first.estimated_wait is not None and first.estimated_wait > 5
        assert len(fake.requests_to(RESYNTH)) == 12  # the paid call is not out yet
        second = await on_virtual_time(clock, fake, updates.__anext__())
        assert second.status is S.SYNTHESIZING and not second.queued
        await updates.aclose()
        assert len(fake.ledger) == 13


# -- 6. proxies --------------------------------------------------------------------------------


@pytest.mark.parametrize("bypassed", [False, True])
async def test_proxy_variables_are_honoured_read_once(
    monkeypatch: pytest.MonkeyPatch, bypassed: bool
) -> None:
    """HTTP_PROXY reaches sessions the SDK creates (NO_PROXY bypasses it), without
    aiohttp's per-request environment and .netrc lookups."""
    from aiohttp import web

    from .conftest import serve_app

    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response({"id": "char_1", "status": "ready", "name": "via proxy"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    async with serve_app(app) as proxy_url:
        for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        if bypassed:
            monkeypatch.setenv("NO_PROXY", "127.0.0.9")
        async with aa.AurousSession("al_test_" + "x" * 32, base_url="http://127.0.0.9:9",
                                    rate_limits=None, max_retries=0, timeout=5) as s:
            if bypassed:
                with pytest.raises(aa.APIConnectionError):
                    await s.characters.get("char_1")
            else:
                assert (await s.characters.get("char_1")).name == "via proxy"
    assert seen == ([] if bypassed else ["http://127.0.0.9:9/v1/characters/char_1"])


def test_an_unknown_value_shaped_like_a_known_name_is_not_known() -> None:
    """Defect guarded: CharacterStatus("READY").is_known was True (its pseudo-member's
    name matched the known member's) though it is not equal to READY."""
    assert not aa.CharacterStatus("READY").is_known
    assert aa.CharacterStatus("ready").is_known
    assert not aa.EventType("IMAGE_COMPLETED").is_known


async def test_joiners_take_over_when_the_owner_walks_away() -> None:
    """Defect guarded (review): when the caller whose POST others joined was cancelled,
    every joiner waited for ever (and the charged synthesis went unwatched)."""
    from aurous_async.testing import Fault, FaultKind

    clock = ScaledClock(100)
    async with FakeAurousServer(clock=clock, synthesis_seconds=5) as fake, \
            fake.session(timeout=3600) as s:
        cid = fake.add_character()
        # Held until the owner is gone (30 s only bounds a test gone wrong): a fixed hold
        # could end before the joiner joined on a slow moment of the machine.
        held = fake.faults.add(Fault(FaultKind.SLOW, route=RESYNTH, nth=1, delay=30))
        owner = asyncio.ensure_future(_first(s.characters.resynthesize_and_watch(cid)))
        for _ in range(2000):  # until the owner's POST is at the server (and held there)
            if fake.requests_to(RESYNTH):
                break
            await asyncio.sleep(0.002)
        joiner = asyncio.ensure_future(
            _last(s.characters.resynthesize_and_watch(cid, auto_save=True)))
        await asyncio.sleep(0.05)
        owner.cancel()
        held.release()
        final = await asyncio.wait_for(joiner, timeout=10)
    assert final.status is S.READY
    assert len(fake.ledger) == 1  # the joiner took over under the same key: no 2nd charge


async def test_overlapping_batches_in_one_session_pay_once_per_character(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    """Defect guarded (review): two concurrent batches sharing ids both charged them."""
    ids = [fake.add_character() for _ in range(10)]

    async def batch(part: list[str]) -> list[aa.BatchResult]:
        return [r async for r in s.characters.resynthesize_many(part, auto_save=True)]

    first, second = await asyncio.gather(batch(ids[:7]), batch(ids[3:]))
    assert all(r.ok for r in first + second), [r.error for r in first + second if not r.ok]
    assert sorted(c.character_id for c in fake.ledger) == sorted(ids)


async def _last(updates: AsyncIterator[aa.StatusUpdate]) -> aa.StatusUpdate:
    last = None
    async for update in updates:
        last = update
    assert last is not None
    return last


async def test_a_batch_left_early_leaves_no_call_in_the_session_table(
    fake: FakeAurousServer, s: aa.AurousSession
) -> None:
    """Defect guarded: a call taken back when the consumer paused (or left) stayed in the
    session's in-flight table, for a later flow to join a call nobody owns."""
    ids = [fake.add_character() for _ in range(20)]
    async with s.characters.resynthesize_many(ids) as batch:
        async for _ in batch:
            break
    assert list(s._parts.inflight._entries) == []
