"""``s.feed(event)``: a verified webhook wakes the watchers of its character at once, and
while pushes keep arriving, polls fall back to the policy's max_interval."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import aurous_async as aa
from aurous_async._polling import PUSH_SAFETY_NET, PollScheduler
from aurous_async._watch import watch_character
from aurous_async.testing import FakeAurousServer, FakeClock, ScaledClock

S = aa.CharacterStatus


def _event(character_id: str, kind: str = "character.completed") -> aa.WebhookEvent:
    return aa.WebhookEvent(id=f"evt_{character_id}", type=aa.EventType(kind),
                           created_at=None, data={"id": character_id}, synthetic=False)


async def _no_save(cid: str) -> aa.Character:
    raise AssertionError("not saving")


async def test_a_push_wakes_a_watcher_long_before_its_next_poll(clock: FakeClock) -> None:
    """Defect guarded: a watcher learned a character was done only at its next poll."""
    done = False
    fetched: list[float] = []

    async def fetch(cid: str) -> aa.Character:
        fetched.append(clock.monotonic())
        return aa.Character(id=cid, status=S.REVIEWING if done else S.SYNTHESIZING)

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0), clock)
    scheduler.estimate.value = 300.0  # the first poll would come in 300 s
    known = aa.Character(id="c1", status=S.SYNTHESIZING)
    watcher = watch_character(scheduler, _no_save, "c1", clock=clock, auto_save=False,
                              deadline=None, known=known)
    assert (await watcher.__anext__()).status is S.SYNTHESIZING
    following = asyncio.ensure_future(watcher.__anext__())
    await clock.advance(40)
    assert fetched == []
    done = True
    assert scheduler.push("c1") is True
    update = await asyncio.wait_for(following, timeout=2)
    assert update.status is S.REVIEWING
    assert fetched == [1040.0]  # one GET, at the push
    assert scheduler.push("c_unwatched") is False
    await watcher.aclose()
    await scheduler.aclose()


async def test_while_pushes_arrive_polls_are_only_a_safety_net(clock: FakeClock) -> None:
    fetched: list[float] = []

    async def fetch(cid: str) -> aa.Character:
        fetched.append(clock.monotonic())
        return aa.Character(id=cid, status=S.SYNTHESIZING)

    scheduler = PollScheduler(fetch, aa.PollPolicy(jitter=0, interval=2, max_interval=15), clock)
    scheduler.push("someone_else")  # pushes are arriving
    watcher = watch_character(scheduler, _no_save, "c1", clock=clock, auto_save=False,
                              deadline=None)
    reader = asyncio.ensure_future(_drain(watcher))
    await clock.advance(3 * PUSH_SAFETY_NET + 1)
    gaps = [b - a for a, b in itertools.pairwise(fetched)]
    assert gaps and all(gap == PUSH_SAFETY_NET for gap in gaps), fetched  # not 2, 3, 4.5 …
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await scheduler.aclose()


async def _drain(watcher: object) -> None:
    async for _ in watcher:  # type: ignore[attr-defined]
        pass


async def test_session_feed_wakes_a_watch_over_http() -> None:
    clock = ScaledClock(100)
    async with FakeAurousServer(clock=clock, synthesis_seconds=5) as fake:
        cid = fake.add_character()
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                                    timeout=3600) as s:
            assert s.feed(_event(cid)) is False  # nobody watches it yet
            assert s.feed(_event("x", "image.completed")) is False  # not a character event
            with pytest.raises(TypeError):
                s.feed({"type": "character.completed"})  # type: ignore[arg-type]
            s._parts.scheduler.estimate.value = 600.0  # polls would be far off
            updates = s.characters.resynthesize_and_watch(cid, timeout=3000)
            assert (await updates.__anext__()).status is S.SYNTHESIZING
            following = asyncio.ensure_future(updates.__anext__())
            await asyncio.sleep(0.1)  # 10 API seconds: the synthesis is over
            assert not following.done()
            assert s.feed(_event(cid)) is True
            update = await asyncio.wait_for(following, timeout=5)
            assert update.status is S.REVIEWING
            await updates.aclose()


async def test_end_to_end_a_delivered_event_wakes_the_watcher_before_its_poll() -> None:
    """The whole loop on one machine: register a receiver with the fake, resynthesize; the
    fake's signed character.completed delivery wakes the watcher well before its next
    scheduled poll."""
    from aiohttp import web

    from .conftest import serve_app

    clock = ScaledClock(100)
    async with FakeAurousServer(clock=clock, synthesis_seconds=5) as fake, \
            aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock,
                             timeout=3600) as s:
        cid = fake.add_character()
        received: list[aa.WebhookEvent] = []
        holder: dict[str, aa.webhooks.WebhookReceiver] = {}
        app = web.Application()

        async def handle(request: web.Request) -> web.StreamResponse:
            return await holder["receiver"].handle(request)

        app.router.add_post("/hooks", handle)
        async with serve_app(app) as url:
            endpoint = await s.webhook_endpoints.create(
                f"{url}/hooks", events=["character.completed", "character.failed"])
            assert endpoint.secret is not None and endpoint.secret not in repr(endpoint)
            holder["receiver"] = aa.webhooks.WebhookReceiver(endpoint.secret, received.append,
                                                             session=s)
            s._parts.scheduler.estimate.value = 600.0  # the first poll would be far off
            updates = [u async for u in s.characters.resynthesize_and_watch(
                cid, timeout=300, min_time_left=0)]
            await holder["receiver"].aclose()
    assert updates[-1].status is S.REVIEWING
    assert updates[-1].elapsed < 60  # woken by the push at ~5 s, not by a poll at 270 s
    assert [e.type for e in received] == [aa.EventType.CHARACTER_COMPLETED]


async def test_a_session_fed_by_a_receiver_polls_only_as_a_safety_net_from_the_start() -> None:
    """Defect guarded: the first characters of a pushed fan-out were polled on the full
    schedule (6-7 GETs each) until the first delivery arrived."""
    async with aa.AurousSession("al_test_" + "w" * 32, base_url="http://127.0.0.1:9",
                                clock=FakeClock()) as s:
        scheduler = s._parts.scheduler
        assert not scheduler._pushes_active()
        aa.webhooks.WebhookReceiver("whsec_" + "k" * 20, session=s)
        assert scheduler._pushes_active()
        sub = scheduler.subscribe("c1", aa.Character(id="c1", status=S.SYNTHESIZING))
        due = scheduler._watched["c1"].due - s.clock.monotonic()
        assert due == PUSH_SAFETY_NET
        scheduler.unsubscribe(sub)
