"""Durable batches: what a journal costs a fan-out, and how fast a big batch resumes.

    python benchmarks/bench_durable.py [--quick] [--characters 1000] [--scale 500]

1. A fan-out of n characters at time ×500 through the SDK, without a journal and with an
   ``SQLiteJournal`` (interleaved: plain, journal, plain, journal): wall time ÷ the plain
   run's, and the journal file's bytes per character.
2. Resuming a 10,000-id batch whose records are in every state (a quarter each done,
   sent, sending, pending): time from the call until the journal is read, every id is
   planned, and the first result (read from the journal) is yielded.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import header, parser, prose, record, table

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, ScaledClock


async def fan_out(n: int, scale: float, journal_dir: Path | None) -> dict[str, Any]:
    clock = ScaledClock(scale)
    async with FakeAurousServer(clock=clock, synthesis_seconds=45.0, synthesis_jitter=0.2,
                                credits=10 * n) as fake:
        fake.keep_request_log = False
        ids = [fake.add_character() for _ in range(n)]
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            wall = time.perf_counter()
            if journal_dir is None:
                ok = sum([r.ok async for r in s.characters.resynthesize_many(ids, auto_save=True)])
                size = 0
            else:
                path = journal_dir / f"fanout-{n}-{time.monotonic_ns()}.db"
                async with aa.SQLiteJournal(path) as journal:
                    ok = sum([r.ok async for r in s.characters.resynthesize_many(
                        ids, auto_save=True, journal=journal, batch="bench")])
                size = _journal_bytes(journal_dir, path.name)
            wall = time.perf_counter() - wall
    return {"ok": ok, "wall": wall, "bytes": size}


def _journal_bytes(directory: Path, name: str) -> int:
    """The journal's size on disk: its file, write-ahead log and shared memory."""
    return sum(p.stat().st_size for p in directory.glob(name + "*"))


async def resume(n: int, journal_dir: Path) -> float:
    """Seconds to read an n-id batch in mixed states and yield its first result."""
    clock = ScaledClock(1000)
    async with FakeAurousServer(clock=clock, synthesis_seconds=45.0) as fake:
        ids = [fake.add_character() for _ in range(n)]
        path = journal_dir / f"resume-{n}.db"
        character = {"id": "x", "status": "ready", "name": "A", "refs": []}
        async with aa.SQLiteJournal(path) as journal:
            batch = await journal.open_batch("resume", ids)
            quarter = n // 4
            marks = []
            for index, cid in enumerate(ids[:3 * quarter]):
                async def step(cid: str = cid, index: int = index) -> None:
                    await batch.mark_sending(cid, f"key-{cid}", time.time())
                    if index < 2 * quarter:
                        await batch.mark_sent(cid, "req_1", {**character, "id": cid})
                    if index < quarter:
                        await batch.mark_done(cid, "ready", {**character, "id": cid})
                marks.append(step())
            await asyncio.gather(*marks)
            await batch.aclose()
        async with aa.SQLiteJournal(path) as journal, aa.AurousSession(
            fake.api_key, base_url=fake.base_url, clock=clock
        ) as s:
            start = time.perf_counter()
            run = s.characters.resynthesize_many(ids, journal=journal, batch="resume")
            first = await run.__anext__()
            elapsed = time.perf_counter() - start
            assert first.from_journal
            await run.aclose()
    return elapsed


async def main() -> None:
    p = parser(__doc__)
    p.add_argument("--characters", type=int, default=1000)
    p.add_argument("--scale", type=float, default=500.0)
    args = p.parse_args()
    n, rounds, resume_n = ((100, 1, 1000) if args.quick else (args.characters, 2, 10_000))
    header("Durable batches: the journal's cost, and resuming")
    prose(f"""A fan-out of {n:,} characters at ×{args.scale:g} (the documented buckets,
        45 s ± 20 % syntheses, auto_save) through the SDK, without a journal and with an
        SQLiteJournal, in {rounds} interleaved round(s); the ratio is of median wall times.
        Then a {resume_n:,}-id batch with a quarter of its records in each state (done,
        sent, sending, pending) is resumed: the time from the call to its first result
        covers opening the journal, reading and planning every id, and starting.""")
    plain: list[float] = []
    journaled: list[float] = []
    size = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            plain.append((await fan_out(n, args.scale, None))["wall"])
            result = await fan_out(n, args.scale, Path(tmp))
            journaled.append(result["wall"])
            size = result["bytes"]
        resumed = await resume(resume_n, Path(tmp))
    ratio = statistics.median(journaled) / statistics.median(plain)
    table([("figure", "value", "goal"),
           (f"fan-out of {n:,}: wall with journal ÷ without", f"{ratio:.3f}", "≤ 1.02"),
           ("journal file, bytes per character", f"{size / n:,.0f}", "—"),
           (f"resume a {resume_n:,}-id batch: seconds to its first result",
            f"{resumed:.2f}", "≤ 1")])
    record(args.figures, "journal_fanout_wall_ratio", ratio)
    record(args.figures, "journal_bytes_per_character", size / n)
    record(args.figures, "journal_resume_seconds", resumed)


if __name__ == "__main__":
    asyncio.run(main())
