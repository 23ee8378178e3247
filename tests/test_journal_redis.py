"""RedisJournal against a real redis-server: the journal contract, lease expiry on
Redis's clock, fencing, killed runners, and outages."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from aurous_async import FakeClock
from aurous_async._journal import BatchInUseError, JournalError, LeaseLostError
from aurous_async._journal_redis import RedisJournal
from tests.test_journal import NOW, Factory, JournalContract, check_crash, run_child, walk


@pytest.fixture
def prefix() -> str:
    return f"test:journal:{uuid.uuid4().hex}"


class TestRedisContract(JournalContract):
    @pytest.fixture
    def make(self, redis_url: str, prefix: str, clock: FakeClock) -> Factory:
        return lambda **kw: RedisJournal.from_url(redis_url, prefix=prefix, clock=clock, **kw)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def wait_for_takeover(journal: RedisJournal, batch: str) -> Any:
    """Open ``batch`` as soon as the lease holder's lease lapses (bounded wait)."""
    for _ in range(200):
        try:
            return await journal.open_batch(batch, [])
        except BatchInUseError as exc:
            await asyncio.sleep(min(exc.expires_in, 0.05) + 0.01)
    raise AssertionError("the lease never lapsed")


async def test_a_lapsed_lease_is_taken_over_and_fenced(redis_url: str, prefix: str) -> None:
    """Guards takeover on Redis's clock and fencing: once a stalled runner's lease
    lapses another runner takes the batch, and the stalled one's writes are refused."""
    stalled_clock = FakeClock()  # never advanced: this runner never renews
    async with RedisJournal.from_url(redis_url, prefix=prefix, lease_ttl=0.3,
                                     clock=stalled_clock) as stalled, \
            RedisJournal.from_url(redis_url, prefix=prefix, lease_ttl=30) as fresh:
        old = await stalled.open_batch("b", ["a"])
        with pytest.raises(BatchInUseError) as caught:
            await fresh.open_batch("b", ["a"])
        assert 0 < caught.value.expires_in <= 0.3
        async with await wait_for_takeover(fresh, "b") as new:
            await new.mark_sending("a", "key-new", NOW)
            with pytest.raises(LeaseLostError):
                await old.mark_sending("a", "key-old", NOW)
            assert old.lease_lost
            assert (await fresh.read_batch("b"))[0].idempotency_key == "key-new"
        await old.aclose()


async def test_renewal_keeps_the_lease_and_notices_its_loss(redis_url: str,
                                                            prefix: str) -> None:
    """Guards renewal: a live runner keeps its batch past lease_ttl, and learns from its
    next renewal when the batch was taken over."""
    clock = FakeClock()
    async with RedisJournal.from_url(redis_url, prefix=prefix, lease_ttl=0.3,
                                     clock=clock) as journal, \
            RedisJournal.from_url(redis_url, prefix=prefix) as other:
        batch = await journal.open_batch("b", ["a"])
        for _ in range(4):  # 0.4 s of real time (past the 0.3 s ttl), renewed every 0.1 s
            await clock.advance(0.1)
            await asyncio.sleep(0.1)
        with pytest.raises(BatchInUseError):
            await other.open_batch("b", [])
        assert not batch.lease_lost
        await other.client.set(f"{prefix}:{{b}}:lease", "someone-else")
        await clock.advance(0.1)
        for _ in range(100):
            if batch.lease_lost:
                break
            await asyncio.sleep(0.01)
        assert batch.lease_lost


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_is_a_quick_clear_error_without_the_password() -> None:
    """Guards "Redis down": a JournalError at once (before any request), naming the
    server but never the password in the URL."""
    port = closed_port()
    journal = RedisJournal.from_url(f"redis://:hunter2secret@127.0.0.1:{port}/3")
    start = time.monotonic()
    for call in (journal.open_batch("b", ["a"]), journal.read_batch("b"), journal.batches()):
        with pytest.raises(JournalError) as caught:
            await call
        assert f"127.0.0.1:{port}/3" in str(caught.value)
        assert "hunter2secret" not in str(caught.value)
    assert "hunter2secret" not in repr(journal)
    assert time.monotonic() - start < 3.0
    await journal.aclose()


async def connected_names(client: aioredis.Redis) -> list[str]:
    return [c["name"] for c in await client.client_list()]


async def test_only_a_client_it_made_is_closed(redis_url: str, client: aioredis.Redis,
                                               prefix: str) -> None:
    """Guards ownership: aclose closes the client from_url made, never the caller's."""
    mine = aioredis.Redis.from_url(f"{redis_url}?client_name=callers-client")
    async with RedisJournal(mine, prefix=prefix) as journal:
        await (await journal.open_batch("b", ["a"])).aclose()
    assert "callers-client" in await connected_names(client)
    await mine.aclose()
    async with RedisJournal.from_url(f"{redis_url}?client_name=journals-own",
                                     prefix=prefix) as journal:
        await journal.read_batch("b")
        assert "journals-own" in await connected_names(client)
    # Redis drops a closed connection from its list a moment after the close (it was
    # still listed in 1 of 10 full runs): wait for that, up to 2 s.
    for _ in range(200):
        if "journals-own" not in await connected_names(client):
            break
        await asyncio.sleep(0.01)
    assert "journals-own" not in await connected_names(client)


async def test_batch_names_that_look_like_keys_stay_apart(client: aioredis.Redis,
                                                          prefix: str) -> None:
    """Guards the key layout: names holding ':' or braces must not share keys."""
    names = ["a", "a:lease", "a:records", "a}:records", "{a}", "a:{b}"]
    async with RedisJournal(client, prefix=prefix) as journal, AsyncExitStack() as stack:
        for n, name in enumerate(names):  # all open at once: every lease key is live
            batch = await stack.enter_async_context(await journal.open_batch(name, [f"id-{n}"]))
            await walk(batch, f"id-{n}", "sent")
        for n, name in enumerate(names):
            records = await journal.read_batch(name)
            assert [(r.character_id, r.state.value) for r in records] == [(f"id-{n}", "sent")]
        assert await journal.batches() == sorted(names)


async def test_a_decoding_client_works_too(redis_url: str, prefix: str) -> None:
    """Guards decode_responses=True clients, which answer str instead of bytes."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with RedisJournal(redis, prefix=prefix) as journal:
        async with await journal.open_batch("b", ["a", "b"]) as batch:
            await walk(batch, "a", "done")
        records = await journal.read_batch("b")
        assert [r.state.value for r in records] == ["done", "pending"]
        assert await journal.batches() == ["b"]
    await redis.aclose()


async def test_a_corrupt_record_is_a_journal_error(client: aioredis.Redis, prefix: str) -> None:
    """Guards decoding: a record that is not ours is a JournalError, not a crash."""
    async with RedisJournal(client, prefix=prefix) as journal:
        await (await journal.open_batch("b", ["a"])).aclose()
        await client.hset(f"{prefix}:{{b}}:records", "a", b"{not json")
        with pytest.raises(JournalError, match="corrupt record"):
            await journal.read_batch("b")


@pytest.mark.parametrize("step", ["sending", "sent", "done", "failed", "pending"])
async def test_sigkill_after_a_write_keeps_it(redis_url: str, prefix: str, step: str) -> None:
    """Guards write-ahead durability on Redis: the write that returned just before a
    SIGKILL is what the next life reads; the dead runner's lease still blocks."""
    await run_child("redis", redis_url, prefix, f"die:{step}")
    async with RedisJournal.from_url(redis_url, prefix=prefix) as journal:
        first = (await journal.read_batch("crash"))[0]
        assert first.state.value == step
        assert first.idempotency_key == "key-char_0"
        with pytest.raises(BatchInUseError) as caught:
            await journal.open_batch("crash", [])
        assert caught.value.expires_in > 20


@pytest.mark.parametrize("kill_after", [1, 40, 301])
async def test_sigkill_mid_stream_loses_no_acknowledged_write(redis_url: str, prefix: str,
                                                              kill_after: int) -> None:
    """Guards crash consistency on Redis: every acknowledged write survives a SIGKILL."""
    acked = await run_child("redis", redis_url, prefix, "stream", kill_after)
    async with RedisJournal.from_url(redis_url, prefix=prefix) as journal:
        await check_crash(journal, acked)
