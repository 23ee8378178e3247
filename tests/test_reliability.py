"""Reliability under faults, hostile servers, hostile callers, cancellation and time."""

from __future__ import annotations

import asyncio
import fnmatch
import gc
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aurous_async as aa
from aurous_async import _convert
from aurous_async.testing import BucketLimit, FakeAurousServer, Fault, FaultKind, ScaledClock

from .conftest import on_virtual_time, sdk_tasks, serve_app
from .test_errors import bodies

S = aa.CharacterStatus
RESYNTH = "POST /v1/characters/{character_id}/resynthesize"


class LoopErrors:
    """Collects what the event loop would print: never-retrieved task exceptions and
    the like."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)


# -- 1. fault soak ---------------------------------------------------------------------------


async def test_fault_soak_500_flows() -> None:
    """500 resynthesize-and-wait flows while ~20% of answers are faulted.

    Time runs 25x and the buckets 100x their documented rates (the same on both sides):
    a slow answer of 3 real seconds is then 75 API seconds, slower than the client's
    2 s (50 API seconds) attempt timeout, and 500 flows fit in about eight seconds. (The
    timeout is real time: generous enough that a loaded machine does not trip it on
    normal answers. At 0.5 s, on a machine giving the loop a quarter of a core, most
    attempts timed out and up to a fifth of the flows ran out of retries.)
    """
    clock = ScaledClock(25)
    server_buckets = {"characters_synthesize": BucketLimit(600, 50),
                      "characters_post": BucketLimit(3000, 300),
                      "characters_get": BucketLimit(12_000, 500)}
    limits = aa.RateLimits(characters_synthesize=aa.RateLimit(600, 60, 50),
                           characters_post=aa.RateLimit(3000, 60, 300),
                           characters_get=aa.RateLimit(12_000, 60, 500))
    loop_errors = LoopErrors()
    asyncio.get_running_loop().set_exception_handler(loop_errors)
    async with FakeAurousServer(clock=clock, synthesis_seconds=30, synthesis_jitter=0.3,
                                credits=10_000, seed=11, buckets=server_buckets) as fake:
        fake.keep_request_log = False
        ids = [fake.add_character() for _ in range(500)]
        fake.faults.extend([
            Fault(FaultKind.DROP, probability=0.05),
            Fault(FaultKind.HTML_502, probability=0.04),
            Fault(FaultKind.JSON_503, probability=0.04),
            Fault(FaultKind.SLOW, probability=0.03, delay=3.0),
            Fault(FaultKind.BROKEN_JSON, probability=0.05),
        ])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                        timeout=2.0, max_retries=4, rate_limits=limits) as s:

                async def flow(cid: str) -> aa.Character | aa.AurousError:
                    try:
                        async for update in s.characters.resynthesize_and_watch(
                            cid, auto_save=True, timeout=3_000
                        ):
                            last = update.character
                        return last
                    except aa.AurousError as exc:
                        return exc

                outcomes = await asyncio.wait_for(asyncio.gather(*(flow(c) for c in ids)),
                                                  timeout=240)
            gc.collect()
            await asyncio.sleep(0.05)
        faults_fired = sum(rule.fired for rule in fake.faults._rules)
        answered = fake.faults._rules[0].seen  # every rule counts every request
    finals = [o for o in outcomes if isinstance(o, aa.Character)]
    errors = [o for o in outcomes if isinstance(o, aa.AurousError)]
    assert len(finals) + len(errors) == 500  # every flow ended, nothing else escaped
    # A few flows may run out of retries (five faults in a row) or of patience with a
    # slow first attempt still running (IdempotencyKeyInUseError): typed, and rare.
    assert len(finals) >= 475, [repr(e) for e in errors[:5]]
    assert all(c.status is S.READY for c in finals)
    # No double charge: one logical resynthesize per character, charged at most once,
    # and exactly once for every flow that finished.
    for cid, outcome in zip(ids, outcomes, strict=True):
        charges = len(fake.charges_for(cid))
        assert charges <= 1, cid
        if isinstance(outcome, aa.Character):
            assert charges == 1
    # The soak really was faulty: a resynthesize, a poll and a save per flow at least,
    # and about 21% of all answers faulted. (How many polls a flow makes depends on how
    # much API time each round trip takes, so the count of faults alone would depend
    # on the machine's load.)
    assert answered >= 3 * 500
    assert faults_fired > 0.15 * answered, (faults_fired, answered)
    assert sdk_tasks() == []
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "nclosed" in m or "never retrieved" in m], messages
    assert not [c for c in loop_errors.contexts if "exception" in c], loop_errors.contexts


# -- 2. hostile server -------------------------------------------------------------------------

MAX_WAIT = 120.0  # the longest wait the SDK may ever take (a capped Retry-After)

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
retry_after = st.one_of(
    header_text, st.sampled_from(["-5", "1e308", "inf", "nan", "0", "3", "121", "86400",
                                  "Wed, 21 Oct 2099 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"]),
    st.integers(-10**6, 10**9).map(str), st.floats(allow_nan=True).map(str),
)
hostile_headers = st.fixed_dictionaries({}, optional={
    "Retry-After": retry_after,
    "X-RateLimit-Remaining": st.one_of(header_text, st.integers(-10**12, 10**12).map(str)),
    "X-RateLimit-Reset": st.one_of(header_text, st.integers(-10**12, 10**15).map(str)),
    "X-RateLimit-Limit": header_text,
    "RateLimit-Remaining": header_text,
    "Aurous-Request-Id": header_text,
    "Aurous-Idempotent-Replayed": st.sampled_from(["true", "false", "TRUE", ""]),
    "Location": header_text,
})
hostile_status = st.sampled_from([200, 201, 204, 301, 302, 307, 400, 401, 402, 403, 404, 409,
                                  410, 418, 422, 429, 500, 502, 503, 504, 599])
# Half the bodies are any body test_errors throws at the decoders; half are the ones a
# server sends most (empty, an envelope, a character, a proxy's page) and cost nothing
# to draw: what decides the waits is the status and the headers.
usual_bodies = st.sampled_from([
    b"", b"{}", b"[]", b"<html><body>502 Bad Gateway</body></html>", b'{"id": "char_x"}',
    b'{"id": "char_x", "status": "ready", "name": "A", "refs": []}',
    b'{"error": {"type": "rate_limit", "code": "too_many_requests", "message": "slow"}}',
    b'{"error": {"type": "invalid_request", "code": "idempotency_key_in_use"}}',
    b'{"data": [], "has_more": false}',
])
hostile_response = st.tuples(hostile_status, hostile_headers, usual_bodies | bodies)


class ScriptedServer:
    """A real HTTP server that answers with whatever the test scripts, in order."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.served = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.script:
            status, headers, body = self.script.pop(0)
        else:
            status, headers, body = 503, {}, b"script exhausted"
        self.served += 1
        return web.Response(status=status, headers=headers, body=body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


def test_hostile_answers_yield_models_or_typed_errors_and_bounded_waits() -> None:
    loop = asyncio.new_event_loop()
    server = ScriptedServer()
    serving = serve_app(server.app())
    url = loop.run_until_complete(serving.__aenter__())
    clock = aa.FakeClock(auto_advance=True)
    # Limiter waits are bounded on their own (next test): here the transport's waits.
    session = aa.AurousSession("al_live_" + "4" * 64, base_url=url, clock=clock, max_retries=3,
                               timeout=5, rate_limits=None)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(script=st.lists(hostile_response, min_size=1, max_size=4),
           method=st.sampled_from(["get", "resynthesize", "list", "delete"]))
    def check(script: list[tuple[int, dict[str, str], bytes]], method: str) -> None:
        server.script = list(script)
        clock.sleeps.clear()

        async def call() -> object:
            if method == "get":
                return await session.characters.get("char_x")
            if method == "resynthesize":
                return await session.characters.resynthesize("char_x")
            if method == "delete":
                return await session.characters.delete("char_x")
            return [c async for c in session.characters.list(limit=5)]

        try:
            result = loop.run_until_complete(asyncio.wait_for(call(), timeout=30))
        except aa.AurousError:
            pass
        else:
            assert result is not None
        assert all(0 <= wait <= MAX_WAIT for wait in clock.sleeps), clock.sleeps
        assert len(clock.sleeps) <= 3 + 20  # retries, plus at most 20 in-flight 409 waits

    try:
        check()
    finally:
        loop.run_until_complete(session.aclose())
        loop.run_until_complete(serving.__aexit__(None, None, None))
        loop.close()


@pytest.mark.parametrize("retry_after", [1e308, float("inf"), 10**9, None])
async def test_a_hostile_429_blocks_the_limiter_for_at_most_two_minutes(retry_after: float | None) -> None:
    clock = aa.FakeClock()
    limiter = aa.InMemoryRateLimiter(clock=clock, phase_sync=False)
    limiter.observe("characters_get", aa.RateLimitFeedback(limited=True, retry_after=retry_after))
    waiter = asyncio.create_task(limiter.acquire("characters_get"))
    await clock.advance(120)
    assert waiter.done()


async def test_hostile_server_never_crashes_a_fan_out() -> None:
    server = ScriptedServer()
    answers = [
        (200, {}, b'{"id": "char_a", "status": "synthesizing"}'),
        (200, {"Retry-After": "nonsense"}, b"{broken"),
        (429, {"Retry-After": "-1", "X-RateLimit-Remaining": "-7"}, b"<html>"),
        (200, {}, b'{"id": "char_a", "status": "mystery"}'),
        (500, {"Retry-After": "1e308"}, b""),
        (200, {}, b'{"id": "char_a", "status": "reviewing", "refs": [{"pose": 3}]}'),
        (402, {}, b'{"error": {"code": "insufficient_credits", "message": "poor"}}'),
        (404, {}, b"[]"),
    ]
    server.script = answers * 40
    clock = ScaledClock(1000)  # the poll scheduler's timers must fire on their own
    ids = [f"char_{i}" for i in range(12)]
    async with serve_app(server.app()) as url, aa.AurousSession(
        "al_live_" + "5" * 64, base_url=url, clock=clock, rate_limits=None
    ) as s:
        results = await asyncio.wait_for(
            _collect(s.characters.resynthesize_many(ids, timeout=600)), timeout=60)
    # One result per id, each either a character or a typed error that says what the
    # server did: the 402 in the script stops dispatching, and the ids after it are
    # reported unsent with that error; nothing escapes as an untyped exception.
    assert sorted(r.character_id for r in results) == sorted(ids)
    assert all(r.character is not None for r in results if r.ok)
    assert any(isinstance(r.error, aa.InsufficientCreditsError) for r in results)
    assert all(type(r.error).__module__ == "aurous_async._errors" for r in results if r.error)


async def _collect(results: AsyncIterator[aa.BatchResult]) -> list[aa.BatchResult]:
    return [r async for r in results]


# -- 3. hostile callers --------------------------------------------------------------------------

GOOD = "char_01HXMQ7Z3K8Y2NABCDEFGHJKMR"

# (method, args, kwargs, error, the argument its message must name)
BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("get", (None,), {}, TypeError, "character_id"),
    ("get", (123,), {}, TypeError, "character_id"),
    ("get", ("",), {}, ValueError, "character_id"),
    ("get", ("..",), {}, ValueError, "character_id"),
    ("get", ("a\x00b",), {}, ValueError, "character_id"),
    ("save", (["x"],), {}, TypeError, "character_id"),
    ("delete", ("x" * 257,), {}, ValueError, "character_id"),
    ("create", (), {"name": None, "generate": True}, TypeError, "name"),
    ("create", (), {"name": "  ", "generate": True}, ValueError, "name"),
    ("create", (), {"name": "x", "generate": 1}, TypeError, "generate"),
    ("create", (), {"name": "x", "upload_ids": [1]}, TypeError, "upload_ids"),
    ("create", (), {"name": "x", "upload_ids": "upl_1"}, TypeError, "upload_ids"),
    ("create", (), {"name": "x", "generate": True, "attributes": 7}, TypeError, "attributes"),
    ("create", (), {"name": "x", "generate": True, "attributes": {"age": "x"}}, TypeError,
     "attributes"),
    ("create", (), {"name": "x", "generate": True, "attributes": {"wings": 2}}, ValueError,
     "attributes"),
    ("create", (), {"name": "x", "generate": True, "idempotency_key": "a b"}, ValueError,
     "idempotency_key"),
    ("update", (GOOD,), {}, ValueError, "name"),
    ("update", (GOOD,), {"name": 5}, TypeError, "name"),
    ("update", (GOOD,), {"attributes": "tall"}, TypeError, "attributes"),
    ("resynthesize", (GOOD,), {"force_all": "yes"}, TypeError, "force_all"),
    ("resynthesize", (GOOD,), {"idempotency_key": 5}, TypeError, "idempotency_key"),
    ("resynthesize", (GOOD,), {"idempotency_key": "k" * 300}, ValueError, "idempotency_key"),
    ("regenerate_ref", (GOOD, "up"), {}, ValueError, "pose"),
    ("regenerate_ref", (GOOD, 4), {}, TypeError, "pose"),
    ("regenerate_ref", (GOOD, "front"), {"prompt_override": 4}, TypeError, "prompt_override"),
    ("wait", (GOOD,), {"timeout": -1}, ValueError, "timeout"),
    ("wait", (GOOD,), {"timeout": "10"}, TypeError, "timeout"),
    ("wait", (GOOD,), {"auto_save": 1}, TypeError, "auto_save"),
]
BAD_ITERATORS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("watch", (GOOD,), {"timeout": float("nan")}, ValueError, "timeout"),
    ("watch", (5,), {}, TypeError, "character_id"),
    ("watch", (GOOD,), {"auto_save": "yes"}, TypeError, "auto_save"),
    ("resynthesize_and_watch", (GOOD,), {"force_all": 0}, TypeError, "force_all"),
    ("resynthesize_and_watch", (GOOD,), {"idempotency_key": ""}, ValueError, "idempotency_key"),
    ("resynthesize_many", ([GOOD, GOOD],), {}, ValueError, "ids"),
    ("resynthesize_many", (GOOD,), {}, TypeError, "ids"),
    ("resynthesize_many", ([GOOD],), {"concurrency": -2}, ValueError, "concurrency"),
    ("resynthesize_many", ([GOOD],), {"progress": "print"}, TypeError, "progress"),
    ("resynthesize_many", ([GOOD],), {"timeout": 0}, ValueError, "timeout"),
    ("list", (), {"limit": 0}, ValueError, "limit"),
    ("list", (), {"limit": True}, TypeError, "limit"),
]
BAD_UPLOADS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("init", ("",), {"content_type": "image/png"}, ValueError, "filename"),
    ("init", ("a.png",), {"content_type": "image/gif"}, ValueError, "content_type"),
    ("init", ("a.png",), {"content_type": "image/png", "extension": 5}, TypeError, "extension"),
    ("upload", ("not bytes", "a.png", "image/png"), {}, TypeError, "data"),
    ("classify", ("",), {}, ValueError, "upload_id"),
    ("classify", (7,), {}, TypeError, "upload_id"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "error", "names"), BAD_CALLS)
async def test_bad_arguments_are_rejected_before_any_request(
    session: aa.AurousSession, sfake: FakeAurousServer, method: str, args: tuple[Any, ...],
    kwargs: dict[str, Any], error: type[Exception], names: str,
) -> None:
    with pytest.raises(error, match=names):
        await getattr(session.characters, method)(*args, **kwargs)
    assert sfake.requests == []


@pytest.mark.parametrize(("method", "args", "kwargs", "error", "names"), BAD_ITERATORS)
async def test_bad_arguments_to_iterators_are_rejected_at_the_call(
    session: aa.AurousSession, sfake: FakeAurousServer, method: str, args: tuple[Any, ...],
    kwargs: dict[str, Any], error: type[Exception], names: str,
) -> None:
    async def consume() -> None:
        async for _ in getattr(session.characters, method)(*args, **kwargs):
            pass

    with pytest.raises(error, match=names):
        await consume()
    assert sfake.requests == []


@pytest.mark.parametrize(("method", "args", "kwargs", "error", "names"), BAD_UPLOADS)
async def test_bad_upload_arguments_are_rejected_before_any_request(
    session: aa.AurousSession, sfake: FakeAurousServer, method: str, args: tuple[Any, ...],
    kwargs: dict[str, Any], error: type[Exception], names: str,
) -> None:
    with pytest.raises(error, match=names):
        await getattr(session.characters.uploads, method)(*args, **kwargs)
    assert sfake.requests == []


# -- 4. cancellation at every await point ---------------------------------------------------------


class CancelAt:
    """Runs a coroutine as a task and cancels that task at its ``cancel_at``-th
    suspension — exactly as ``task.cancel()`` would land at that ``await``."""

    def __init__(self, coro: Any, cancel_at: int | None) -> None:
        self.coro = coro
        self.cancel_at = cancel_at
        self.steps = 0
        self.task: asyncio.Task[Any] | None = None

    def __await__(self) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                awaited = self.coro.throw(error) if error is not None else self.coro.send(value)
            except StopIteration as stop:
                return stop.value
            self.steps += 1
            if self.steps == self.cancel_at and self.task is not None:
                asyncio.get_running_loop().call_soon(self.task.cancel)
            try:
                value, error = (yield awaited), None
            except BaseException as exc:
                value, error = None, exc

    def start(self) -> asyncio.Task[Any]:
        async def run() -> Any:
            return await self

        self.task = asyncio.ensure_future(run())
        return self.task


class CountingLimiter(aa.InMemoryRateLimiter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.taken = 0

    async def acquire(self, bucket: str, *, deadline: float | None = None) -> None:
        await super().acquire(bucket, deadline=deadline)
        self.taken += 1

    def release(self, bucket: str) -> None:
        super().release(bucket)
        self.taken -= 1


async def _cancellation_sweep(make_flow: Callable[[aa.AurousSession, FakeAurousServer], Any],
                              stride: int = 1) -> int:
    # Virtual time: the clock jumps from timer to timer once every request is answered.
    clock = aa.FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=30) as fake:
        async def one(cancel_at: int | None) -> tuple[int, bool]:
            limiter = CountingLimiter(clock=clock)
            fake.requests.clear()
            async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                        rate_limits=limiter) as s:
                runner = CancelAt(make_flow(s, fake), cancel_at)
                task = runner.start()
                try:
                    await on_virtual_time(clock, fake, task)
                    cancelled = False
                except asyncio.CancelledError:
                    cancelled = True

                async def saved() -> None:
                    while s._parts.saves.pending:
                        await clock.sleep(1)

                # Requests already on the wire land, and a charged character whose
                # watcher left is still saved, in the background.
                await on_virtual_time(clock, fake, saved())
                # Nothing of the SDK keeps running, and no connection is held...
                assert sdk_tasks() == [], (cancel_at, sdk_tasks())
                connector = s._parts.http.session().connector
                assert connector is None or not connector._acquired, cancel_at  # type: ignore[attr-defined]
                # ...and every token taken went into a request the server saw.
                assert limiter.taken == len(fake.requests), (cancel_at, limiter.taken,
                                                             len(fake.requests))
            return runner.steps, cancelled

        total, cancelled = await one(None)
        assert not cancelled
        for cancel_at in range(1, total + 1, stride):
            await one(cancel_at)
        return total


async def test_cancelling_a_flow_at_every_await_point_leaves_nothing_behind() -> None:
    async def flow(s: aa.AurousSession, fake: FakeAurousServer) -> None:
        cid = fake.add_character()
        async for _ in s.characters.resynthesize_and_watch(cid, auto_save=True):
            pass

    steps = await _cancellation_sweep(flow)
    # The flow's own awaits: connect, send, read, each state change, the save. (Polls
    # run in the session's scheduler; cancelling the flow drops its interest in them.)
    assert steps >= 6


async def test_cancelling_a_fan_out_at_every_await_point_leaves_nothing_behind() -> None:
    async def flow(s: aa.AurousSession, fake: FakeAurousServer) -> None:
        ids = [fake.add_character() for _ in range(4)]
        async for _ in s.characters.resynthesize_many(ids, auto_save=True):
            pass

    await _cancellation_sweep(flow, stride=2)


# -- 5. a week in the life of a bot ------------------------------------------------------------


def _sdk_memory(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by SDK code (the fake server's own state is not the SDK's)."""
    # Grouped by file first, then the files filtered: the same sum as filtering each
    # trace (one frame each), without matching thousands of traces one by one.
    return sum(stat.size for stat in snapshot.statistics("filename")
               if fnmatch.fnmatch(stat.traceback[0].filename, "*aurous_async*")
               and not fnmatch.fnmatch(stat.traceback[0].filename, "*aurous_async/testing*"))


def _empty_bounded_caches() -> None:
    """Empty the decode caches shared by every session: they fill with new timestamps and
    ref URLs up to their bound (256 entries each, tested in ``test_hot_path.py``) and
    then start over, a saw of up to ~100 KB that is not growth but would hide or fake
    it."""
    _convert._shared_times.clear()
    _convert._shared_attributes.clear()
    _convert._shared_refs.clear()


async def test_a_simulated_week_keeps_memory_flat() -> None:
    """A bot resynthesizing one character an hour for a week (on virtual time: the
    clock jumps from timer to timer once every request has been answered)."""
    clock = aa.FakeClock()
    async with FakeAurousServer(clock=clock, synthesis_seconds=45, synthesis_jitter=0.2,
                                credits=10**6) as fake:
        ids = [fake.add_character() for _ in range(6)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:

            async def hour_of(character_id: str) -> None:
                async for result in s.characters.resynthesize_many([character_id],
                                                                   auto_save=True):
                    assert result.ok, result.error
                await clock.sleep(3600)

            tracemalloc.start(1)
            try:
                sizes = []
                for hour in range(7 * 24):
                    await on_virtual_time(clock, fake, hour_of(ids[hour % len(ids)]))
                    # Logs of the test's own (the clock's sleeps; the fake's requests,
                    # which hold times the clock allocated), not the SDK's memory.
                    clock.sleeps.clear()
                    fake.requests.clear()
                    if hour % 6 == 5:
                        _empty_bounded_caches()
                        gc.collect()
                        sizes.append(_sdk_memory(tracemalloc.take_snapshot()))
            finally:
                tracemalloc.stop()
            scheduler = s._parts.scheduler
            assert scheduler.watched == 0 and not scheduler._polls and len(scheduler._heap) <= 2
            assert isinstance(s.rate_limiter, aa.InMemoryRateLimiter)
            assert s.rate_limiter.queued("characters_synthesize") == 0
    assert len(fake.ledger) == 7 * 24  # every burst went through, charged once each
    # From the first day to the last, the SDK's own memory does not grow. Each day's
    # least is compared: within a day it saws by ~15 KB, as asyncio keeps cancelled
    # timers (each aiohttp request's timeout, with the context it was made in) until
    # enough have piled up to sweep them.
    troughs = [min(sizes[day * 4:day * 4 + 4]) for day in range(7)]
    assert troughs[-1] - troughs[0] < 16 * 1024, sizes
