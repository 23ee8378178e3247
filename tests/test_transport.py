"""Retries, idempotency keys and error mapping over real HTTP against the fake server."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from aiohttp import web

import aurous_async as aa
from aurous_async.testing import BucketLimit, FakeAurousServer, FakeClock, Fault, FaultKind

from .conftest import serve_app

RESYNTH = "POST /v1/characters/{character_id}/resynthesize"
GET_ONE = "GET /v1/characters/{character_id}"


def attempts(fake: FakeAurousServer, route: str) -> int:
    return len(fake.requests_to(route))


async def test_post_gets_a_fresh_uuid4_key_per_call(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    cid = sfake.add_character()
    await session.characters.resynthesize(cid)
    sfake.finish_synthesis(cid)
    await session.characters.resynthesize(cid)
    keys = [r.headers["Idempotency-Key"] for r in sfake.requests_to(RESYNTH)]
    assert len(set(keys)) == 2
    assert all(uuid.UUID(k).version == 4 for k in keys)
    # Only POSTs carry a key: GET, PATCH and DELETE are sent without one.
    await session.characters.get(cid)
    await session.characters.update(cid, name="renamed")
    await session.characters.delete(cid)
    others = [r for r in sfake.requests if r.method != "POST"]
    assert [r.method for r in others] == ["GET", "PATCH", "DELETE"]
    assert all("Idempotency-Key" not in r.headers for r in others)


async def test_callers_key_is_sent_and_replays(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    cid = sfake.add_character()
    first = await session.characters.resynthesize(cid, idempotency_key="order-42")
    again = await session.characters.resynthesize(cid, idempotency_key="order-42")
    assert first == again
    assert [r.headers["Idempotency-Key"] for r in sfake.requests_to(RESYNTH)] == ["order-42"] * 2
    assert sfake.requests_to(RESYNTH)[-1].replayed
    assert len(sfake.charges_for(cid)) == 1


async def test_dropped_response_is_retried_with_the_same_key_and_charged_once(
    session: aa.AurousSession, sfake: FakeAurousServer
) -> None:
    cid = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.DROP, route=RESYNTH, nth=1))
    character = await session.characters.resynthesize(cid)
    assert character.status is aa.CharacterStatus.SYNTHESIZING
    sent = sfake.requests_to(RESYNTH)
    assert len(sent) == 2
    assert sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"]
    assert sent[1].replayed
    assert len(sfake.charges_for(cid)) == 1


async def test_dropped_synthesize_create_charged_once(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    sfake.faults.add(Fault(FaultKind.DROP, route="POST /v1/characters", nth=1))
    hero = await session.characters.create(name="A", generate=True, attributes={"age": 3})
    assert len(sfake.ledger) == 1 and sfake.ledger[0].character_id == hero.id


@pytest.mark.parametrize("kind", [FaultKind.JSON_503, FaultKind.HTML_502, FaultKind.BROKEN_JSON, FaultKind.DROP])
async def test_get_retried_on_transient_failures(session: aa.AurousSession, sfake: FakeAurousServer,
                                                 kind: FaultKind) -> None:
    cid = sfake.add_character()
    sfake.faults.add(Fault(kind, route=GET_ONE, times=2))
    character = await session.characters.get(cid)
    assert character.id == cid
    assert attempts(sfake, GET_ONE) == 3


async def test_retry_waits_follow_full_jitter_exponential_backoff(
    sfake: FakeAurousServer, auto_clock: FakeClock
) -> None:
    """Defect guarded: waits of zero, or of the full cap (no jitter), or not growing."""
    random.seed(1234)  # full jitter draws from the module-level generator
    sfake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/balance"))
    caps = (1, 2, 4, 8, 16, 30, 30)
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                max_retries=len(caps), rate_limits=None) as s:
        ratios: list[float] = []
        for _ in range(20):
            auto_clock.sleeps.clear()
            with pytest.raises(aa.ServerError) as info:
                await s.balance()
            assert info.value.status == 503 and info.value.code == "provider_unavailable"
            assert len(auto_clock.sleeps) == len(caps)
            ratios += [wait / cap for wait, cap in zip(auto_clock.sleeps, caps, strict=True)]
    assert attempts(sfake, "GET /v1/balance") == 20 * (len(caps) + 1)
    # Each wait is uniform on [0, cap]: spread over the whole range, centred on half.
    assert all(0 <= r <= 1 for r in ratios)
    assert min(ratios) < 0.1 and max(ratios) > 0.9
    assert 0.35 < sum(ratios) / len(ratios) < 0.65


@pytest.mark.parametrize("max_retries", [0, 1, 5])
async def test_max_retries_means_n_plus_one_attempts(sfake: FakeAurousServer, auto_clock: FakeClock,
                                                     max_retries: int) -> None:
    sfake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/balance"))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                max_retries=max_retries) as s:
        with pytest.raises(aa.ServerError):
            await s.balance()
    assert attempts(sfake, "GET /v1/balance") == max_retries + 1


async def test_4xx_never_retried(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    with pytest.raises(aa.NotFoundError):
        await session.characters.get("char_missing")
    cid = sfake.add_character(status="synthesizing")
    with pytest.raises(aa.InvalidRequestError):
        await session.characters.resynthesize(cid)
    assert len(sfake.requests) == 2


async def test_delete_not_retried_after_an_answerless_failure(session: aa.AurousSession,
                                                              sfake: FakeAurousServer) -> None:
    cid = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.DROP, route="DELETE /v1/characters/{character_id}", nth=1))
    with pytest.raises(aa.APIConnectionError):
        await session.characters.delete(cid)
    assert attempts(sfake, "DELETE /v1/characters/{character_id}") == 1


async def test_429_waits_retry_after_in_full_then_succeeds(auto_clock: FakeClock) -> None:
    async with FakeAurousServer(clock=auto_clock, buckets={"get": BucketLimit(6, 1)}) as fake, \
            aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=auto_clock,
                             rate_limits=None) as s:
        await s.balance()
        balance = await s.balance()  # bucket empty: 429 Retry-After 10, then success
        assert balance.credits == 1000
        assert fake.rate_limited["get"] == 1
        assert auto_clock.sleeps == [10.0]


async def test_429_with_a_too_long_retry_after_raises(auto_clock: FakeClock) -> None:
    async with FakeAurousServer(clock=auto_clock, buckets={"get": BucketLimit(0.1, 1)}) as fake, \
            aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=auto_clock,
                             rate_limits=None) as s:
        await s.balance()
        with pytest.raises(aa.RateLimitError) as info:
            await s.balance()
    assert info.value.retry_after == 600.0
    assert info.value.code == "too_many_requests" and info.value.type == "rate_limit"
    assert auto_clock.sleeps == []


async def test_timeout_is_retried_with_the_same_key() -> None:
    # The attempt timeout is real time (aiohttp's): the server holds the first attempt
    # 0.3 s, three times the 0.1 s timeout. The backoff that follows is on a FakeClock,
    # moved on once the server has processed the held attempt, so the retry always
    # finds the stored answer (with a real backoff, a jitter shorter than the rest of the
    # hold met the key in flight instead, and the call was settled by free reads).
    clock = FakeClock()
    async with FakeAurousServer() as sfake, aa.AurousSession(
        sfake.api_key, base_url=sfake.base_url, timeout=0.1, clock=clock
    ) as s:
        cid = sfake.add_character()
        sfake.faults.add(Fault(FaultKind.SLOW, route=RESYNTH, nth=1, delay=0.3))
        call = asyncio.ensure_future(s.characters.resynthesize(cid))
        # The first attempt times out on our side but goes through on the server...
        for _ in range(1000):
            if (clock.sleeps and sfake.charges_for(cid)) or call.done():
                break
            await asyncio.sleep(0.005)
        assert not call.done() and len(clock.sleeps) == 1  # ...the retry waits its backoff
        # ...and the retry, under the same key, gets the replay.
        await clock.advance(clock.sleeps[0])
        character = await asyncio.wait_for(call, timeout=10)
    assert character.status is aa.CharacterStatus.SYNTHESIZING
    sent = sfake.requests_to(RESYNTH)
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1
    assert sent[-1].replayed
    assert len(sfake.charges_for(cid)) == 1


async def test_timeout_surfaces_as_api_timeout_error(sfake: FakeAurousServer, auto_clock: FakeClock) -> None:
    # Held 0.25 s, over twice the 0.1 s timeout (the fake waits for it when it stops).
    sfake.faults.add(Fault(FaultKind.SLOW, route="GET /v1/balance", delay=0.25))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                                timeout=0.1, max_retries=1) as s:
        with pytest.raises(aa.APITimeoutError) as info:
            await s.balance()
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, aa.APIConnectionError)


async def test_conflict_on_first_attempt_is_raised(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    a, b = sfake.add_character(), sfake.add_character()
    await session.characters.resynthesize(a, idempotency_key="shared")
    with pytest.raises(aa.IdempotencyKeyInUseError) as info:
        await session.characters.resynthesize(b, idempotency_key="shared")
    assert info.value.status == 409 and isinstance(info.value, aa.ConflictError)
    assert attempts(sfake, RESYNTH) == 2


async def test_connection_refused_is_a_typed_error(auto_clock: FakeClock) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with aa.AurousSession("al_live_" + "0" * 64, base_url=f"http://127.0.0.1:{port}",
                                clock=auto_clock, max_retries=2) as s:
        with pytest.raises(aa.APIConnectionError, match="cannot connect"):
            await s.balance()
    assert len(auto_clock.sleeps) == 2


async def test_redirects_are_not_followed(auto_clock: FakeClock) -> None:
    from aiohttp import web

    seen: list[dict] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPFound("https://evil.example/steal?token=abc")

    app = web.Application()
    app.router.add_get("/v1/balance", redirect)
    async with serve_app(app) as url, aa.AurousSession("al_live_" + "1" * 64, base_url=url,
                                                       clock=auto_clock) as s:
        with pytest.raises(aa.APIStatusError) as info:
            await s.balance()
    assert info.value.status == 302 and info.value.code == "unexpected_redirect"
    assert "token=abc" not in str(info.value)
    assert len(seen) == 1


async def test_replay_header_is_noticed_not_an_error(session: aa.AurousSession, sfake: FakeAurousServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    cid = sfake.add_character()
    caplog.set_level("DEBUG", logger="aurous_async")
    await session.characters.resynthesize(cid, idempotency_key="again")
    await session.characters.resynthesize(cid, idempotency_key="again")
    assert any("replayed" in r.getMessage() for r in caplog.records)


async def test_concurrent_calls_share_one_connection_pool() -> None:
    """Defect guarded: a connection per call (no pool), or a pool ignoring
    ``connection_limit``. The server counts the client ports it is called from."""
    peers: list[object] = []
    body = {"id": "char_1", "status": "ready", "name": "A"}

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        await asyncio.sleep(0.01)  # keeps calls overlapping; nothing is timed
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1/characters/{cid}", handler)
    async with serve_app(app) as url, aa.AurousSession(
        "al_test_" + "p" * 32, base_url=url, connection_limit=5, rate_limits=None
    ) as s:
        await asyncio.gather(*(s.characters.get("char_1") for _ in range(50)))
        assert len(peers) == 50
        assert 1 < len(set(peers)) <= 5
        before = set(peers)
        for _ in range(10):
            await s.characters.get("char_1")
        assert set(peers) == before  # sequential calls reuse kept-alive connections




async def test_recent_urls_are_parsed_once_and_the_table_stays_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each path's URL is kept for the next call of that path (a poll), in a table that
    starts over when full: every request still goes to its own path."""
    from yarl import URL

    from aurous_async import _transport

    parsed: list[str] = []

    def counting_url(text: str, *, encoded: bool) -> URL:
        parsed.append(text)
        return URL(text, encoded=encoded)

    monkeypatch.setattr(_transport, "_URLS_KEPT", 4)
    monkeypatch.setattr(_transport, "URL", counting_url)
    async with FakeAurousServer() as fake:
        ids = [fake.add_character() for _ in range(10)]
        async with fake.session(rate_limits=None) as s:
            urls = s._parts.transport._urls
            for _ in range(2):
                for cid in ids:
                    assert (await s.characters.get(cid)).id == cid
                    assert len(urls) <= 4
            made = len(parsed)
            for _ in range(3):
                await s.characters.get(ids[-1])
            assert len(parsed) == made  # the last path's URL, reused
    assert [r.path for r in fake.requests] == [f"/v1/characters/{c}" for c in ids] * 2 + [
        f"/v1/characters/{ids[-1]}"] * 3


async def test_an_attempt_cut_short_by_a_flows_deadline_is_the_flows_timeout(
        sfake: FakeAurousServer) -> None:
    """Defect guarded: a poll or POST in flight when a flow's deadline passed (its attempt
    timeout capped at the time left) surfaced as APITimeoutError, as if the API were slow,
    as in 1 of 10 full runs of test_many_batch_timeout."""
    waited, batched = sfake.add_character(), sfake.add_character()
    # Held past the flows' 0.15 s, well within the session's 30 s attempt timeout.
    sfake.faults.add(Fault(FaultKind.SLOW, route="GET /v1/characters/{character_id}",
                           delay=0.3))
    sfake.faults.add(Fault(FaultKind.SLOW,
                           route="POST /v1/characters/{character_id}/resynthesize", delay=0.3))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, timeout=30,
                                rate_limits=None) as s:
        with pytest.raises(aa.WatchTimeoutError):
            await s.characters.wait(waited, timeout=0.15)
        with pytest.raises(aa.WatchTimeoutError) as info:
            async for _ in s.characters.resynthesize_and_watch(batched, timeout=0.15,
                                                               min_time_left=0):
                pass
    # The paid POST was on its way: the error says so, with the key to retry it.
    assert info.value.may_have_been_processed and info.value.idempotency_key


async def test_a_retry_the_deadline_stops_ends_as_the_flows_timeout(
        sfake: FakeAurousServer) -> None:
    """The deadline, not the 503, ends a paid call whose next retry would pass it: the
    flow's WatchTimeoutError (naming the 503, with the key to retry with), as when the
    deadline cuts an attempt short — never which of the two depended on the jitter."""
    cid = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.JSON_503,
                           route="POST /v1/characters/{character_id}/resynthesize"))
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, timeout=30,
                                rate_limits=None) as s:
        with pytest.raises(aa.WatchTimeoutError) as info:
            async for _ in s.characters.resynthesize_and_watch(cid, timeout=0.3,
                                                               min_time_left=0):
                pass
    assert "503" in str(info.value) and info.value.idempotency_key
    assert sfake.charges_for(cid) == []


async def test_a_call_on_a_closed_session_fails_at_once_not_after_a_token(
        auto_clock: FakeClock, sfake: FakeAurousServer) -> None:
    """Defect guarded: a call made after the session was closed first queued for a
    rate-limit token (an hour here) and only then said the session was closed."""
    cid = sfake.add_character()
    limits = aa.RateLimits(characters_get=aa.RateLimit(1, 3600.0, 1))
    s = aa.AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                         rate_limits=limits)
    await s.characters.get(cid)  # the bucket's one token
    await s.aclose()
    call = asyncio.ensure_future(s.characters.get(cid))
    for _ in range(5):  # a few turns of the loop, no time: not enough to get a token
        await asyncio.sleep(0)
    assert call.done(), "the call waits for a token of a closed session"
    with pytest.raises(aa.SessionClosedError):
        call.result()
