"""The durable-batch journal on its own: resume time, size on disk, cost of a write.

    python benchmarks/bench_journal.py [--redis redis://localhost:6379/15]

Prints, for the SQLite journal (and the Redis one when a URL is given):

* resuming a 10,000-id batch with every state mixed: a new journal object, the lease,
  every record read, and the resume action of each id (what a restarted fan-out does
  before its first dispatch); median of 5;
* bytes per character on disk (SQLite file) or in memory (Redis ``MEMORY USAGE``),
  with a realistic ~1 KB Character JSON kept for each finished id;
* one write (``mark_*``), committed: median wall time seen by the caller, event-loop CPU
  time (what a fan-out on the same loop pays), and the throughput of 50 concurrent
  writers; then what a 1,000-character fan-out at time x500 (~20 s, 3 writes per id)
  asks of it: one ``sending`` write must fit between two dispatches (20 ms apart), and
  the ~150 writes/s must stay far below the concurrent capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import header, table

from aurous_async._journal import JournalRecord, JournalState, resume_action
from aurous_async._journal_batch import StoredJournal
from aurous_async._journal_redis import RedisJournal
from aurous_async._journal_sqlite import SQLiteJournal

IDS = 10_000
WRITES = 600  # sequential writes timed (200 ids x sending, sent, done)
INTERVAL = 60 / 6 / 500  # seconds between two dispatches at 6/min, time x500
FANOUT_SECONDS = (1_000 - 12) * INTERVAL  # 1,000 ids after a burst of 12
NOW = time.time()


def character(cid: str) -> dict[str, Any]:
    """A Character JSON of the size the API returns (five signed refs)."""
    refs = [{"pose": pose, "url": f"https://cdn.aurous-labs.com/refs/{cid}/{pose}.png?"
             f"expires=1790000000&token={uuid.uuid4().hex}{uuid.uuid4().hex}"}
            for pose in ("portrait", "front", "side", "back", "other")]
    return {"id": cid, "name": f"Character {cid}", "status": "ready", "refs": refs,
            "created_at": "2026-05-01T10:00:00Z", "updated_at": "2026-05-20T10:00:00Z",
            "attributes": {"gender": "female", "age": 28, "ethnicity": "east asian",
                           "hair_color": "black", "hair_style": "long straight",
                           "eye_color": "brown", "body_type": "athletic",
                           "additional_details": "freckles, small scar over the left brow"},
            "error_message": None, "aurous_version": "2026-05-15"}


def mixed(n: int) -> list[JournalRecord]:
    """``n`` records spread over every state, as a long batch looks mid-run."""
    records = []
    for i in range(n):
        cid = f"char_{i:06d}"
        kind = i % 10
        base: dict[str, Any] = {"character_id": cid, "updated_at": NOW}
        if kind < 5:
            records.append(JournalRecord(state=JournalState.DONE, idempotency_key=str(uuid.uuid4()),
                                         sent_at=NOW - 3600, request_id=f"req_{i}", status="ready",
                                         character=character(cid), charged=True, **base))
        elif kind == 5:
            records.append(JournalRecord(state=JournalState.FAILED, idempotency_key=str(uuid.uuid4()),
                                         sent_at=NOW - 3600, error_class="SynthesisFailedError",
                                         error_message="synthesis failed", charged=True,
                                         character={**character(cid), "status": "failed"}, **base))
        elif kind == 6:
            records.append(JournalRecord(state=JournalState.SENT, idempotency_key=str(uuid.uuid4()),
                                         sent_at=NOW - 60, request_id=f"req_{i}", charged=True,
                                         **base))
        elif kind == 7:
            records.append(JournalRecord(state=JournalState.SENDING, idempotency_key=str(uuid.uuid4()),
                                         sent_at=NOW - (30 * 3600 if i % 20 == 7 else 5), **base))
        else:
            records.append(JournalRecord(state=JournalState.PENDING, **base))
    return records


async def fill(journal: StoredJournal, batch: str, records: list[JournalRecord]) -> None:
    # Setup only: store the mixed records through the journal's own primitive, as if a
    # long run had written them one by one.
    handle = await journal.open_batch(batch, [])
    await journal._add(batch, handle._owner, records)
    await handle.aclose()


async def resume_time(make: Callable[[], StoredJournal], batch: str, ids: list[str]) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        async with make() as journal, await journal.open_batch(batch, ids) as handle:
            now = time.time()
            actions = [resume_action(record, now=now) for record in handle.records()]
            times.append(time.perf_counter() - start)
        assert len(actions) == len(ids)
    return statistics.median(times)


async def write_costs(make: Callable[[], StoredJournal]) -> tuple[float, float, float]:
    """(median wall seconds per write, loop CPU seconds per write, writes/s with 50 writers)."""
    ids = [f"w{i}" for i in range(WRITES // 3)]
    walls: list[float] = []
    async with make() as journal, await journal.open_batch("writes", ids) as batch:

        async def timed(write: Awaitable[Any]) -> None:
            start = time.perf_counter()
            await write
            walls.append(time.perf_counter() - start)

        cpu = time.thread_time()
        for cid in ids:
            await timed(batch.mark_sending(cid, f"key-{cid}", NOW))
            await timed(batch.mark_sent(cid, f"req-{cid}", None))
            await timed(batch.mark_done(cid, "ready", character(cid)))
        loop_cpu = (time.thread_time() - cpu) / len(walls)
    together = [f"c{i}" for i in range(WRITES)]
    async with make() as journal, await journal.open_batch("concurrent", together) as batch:
        start = time.perf_counter()
        pending = iter(together)

        async def writer() -> None:
            for cid in pending:
                await batch.mark_sending(cid, f"key-{cid}", NOW)

        await asyncio.gather(*(writer() for _ in range(50)))
        rate = len(together) / (time.perf_counter() - start)
    return statistics.median(walls), loop_cpu, rate


async def bench(name: str, make: Callable[[], StoredJournal], size: Callable[[], Any]) -> None:
    records = mixed(IDS)
    async with make() as journal:
        await fill(journal, "resume", records)
    ids = [record.character_id for record in records]
    resume = await resume_time(make, "resume", ids)
    per_char = await size() / IDS
    wall, loop_cpu, rate = await write_costs(make)
    needed = 3 * 1_000 / FANOUT_SECONDS  # writes/s a 1,000-id fan-out at x500 asks for
    header(f"{name} journal")
    table([
        ("figure", "value"),
        ("resume a 10,000-id batch, all states mixed (median of 5)", f"{resume * 1000:.0f} ms"),
        ("bytes per character (mixed batch, ~1 KB Character JSON per finished id)",
         f"{per_char:,.0f} B"),
        ("one committed write, median wall time", f"{wall * 1e6:,.0f} µs"),
        ("one write, event-loop CPU time", f"{loop_cpu * 1e6:,.0f} µs"),
        ("writes/s with 50 concurrent writers", f"{rate:,.0f}"),
        ("one write, as a share of the 20 ms between dispatches at x500",
         f"{wall / INTERVAL:.1%}"),
        (f"a 1,000-id fan-out at x500 writes {needed:.0f}/s: share of that capacity",
         f"{needed / rate:.1%}"),
    ])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", help="also measure RedisJournal on this server (a test db)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"

        async def file_size() -> int:
            async with SQLiteJournal(path) as journal:
                await journal.read_batch("resume")  # checkpointed into the file on close
            return path.stat().st_size

        await bench("SQLite", lambda: SQLiteJournal(path), file_size)
    if args.redis:
        prefix = f"bench:journal:{uuid.uuid4().hex}"

        def make() -> RedisJournal:
            return RedisJournal.from_url(args.redis, prefix=prefix)

        async def memory() -> int:
            async with make() as journal:
                keys = journal._keys("resume")
                used = [await journal.client.memory_usage(key, samples=0) for key in keys[1:]]
                return sum(n or 0 for n in used)

        try:
            await bench("Redis", make, memory)
        finally:
            async with make() as journal:
                found = [key async for key in journal.client.scan_iter(f"{prefix}*")]
                if found:
                    await journal.client.delete(*found)


if __name__ == "__main__":
    asyncio.run(main())
