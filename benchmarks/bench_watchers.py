"""Watchers at scale: 1,000, 10,000 and 50,000 characters watched at once.

    python benchmarks/bench_watchers.py [--quick] [--watchers 1000 10000 50000]

Each watcher is a task iterating `characters.watch(id)` on a character that stays
`synthesizing`, against the fake server in its own process (so none of its memory or CPU
is counted). Two runs per size:

- idle (twice): a poll interval of an hour, so once every watcher has its first update
  they all sit idle; bytes per watcher from tracemalloc (Python allocations), and in an
  untraced run from RSS;
- polling: a 1 s interval, so the session polls as fast as the server answers; client
  CPU time per poll over a few seconds, polls counted by the server.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from _common import header, parser, prose, record, table
from _servers import ServerProcess

import aurous_async as aa

# A huge GET budget on the client side too: this measures cost, not pacing.
BUDGET = aa.RateLimits(characters_get=aa.RateLimit(10**9, 1.0, 10**9))
IDLE = aa.PollPolicy(interval=3600, max_interval=3600)
BUSY = aa.PollPolicy(interval=1.0, max_interval=1.0, learn=False)


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def watch_all(session: aa.AurousSession, ids: list[str],
                    then: Callable[[], Awaitable[None]]) -> float:
    """Start a watcher per id, wait until each has its first update, run ``then``, cancel
    them all; returns the seconds until all were watching."""
    first = asyncio.Event()
    seen = 0

    async def watcher(cid: str) -> None:
        nonlocal seen
        async for _ in session.characters.watch(cid):
            seen += 1
            if seen == len(ids):
                first.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(watcher(cid)) for cid in ids]
    await first.wait()
    ready = time.perf_counter() - started
    await then()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return ready


async def idle(info: dict[str, str], ids: list[str], traced: bool) -> tuple[float, float]:
    """Bytes per idle watcher, by tracemalloc if ``traced`` else by RSS (tracemalloc's
    own bookkeeping would swell the RSS), and seconds until all were watching."""
    per_watcher = 0.0
    async with aa.AurousSession(info["key"], base_url=info["url"], rate_limits=BUDGET,
                                poll=IDLE) as session:
        # Open the pool's connections first (the scheduler keeps up to 32 polls in
        # flight) so that they do not count as watchers' memory.
        await asyncio.gather(*(session.characters.get(cid) for cid in ids[:64]))
        gc.collect()
        if traced:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if traced else rss_kib() * 1024

        async def measure() -> None:
            nonlocal per_watcher
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] if traced else rss_kib() * 1024
            per_watcher = (after - before) / len(ids)
            tracemalloc.stop()

        ready = await watch_all(session, ids, measure)
    return per_watcher, ready


async def polling(server: ServerProcess, ids: list[str], seconds: float) -> tuple[float, float]:
    """Client CPU µs per poll and polls per second, with every watcher polling."""
    info = server.info
    cpu_per_poll = rate = 0.0
    async with aa.AurousSession(info["key"], base_url=info["url"], rate_limits=BUDGET,
                                poll=BUSY) as session:

        async def measure() -> None:
            nonlocal cpu_per_poll, rate
            await asyncio.sleep(1.0)  # into the steady state
            server.ask("gets")
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            polls = server.ask("gets")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            cpu_per_poll, rate = cpu / polls * 1e6, polls / wall

        await watch_all(session, ids, measure)
    return cpu_per_poll, rate


def main() -> None:
    """Measure each size and print the table."""
    p = parser(__doc__)
    p.add_argument("--watchers", type=int, nargs="+")
    args = p.parse_args()
    sizes = args.watchers or ([200, 1_000] if args.quick else [1_000, 10_000, 50_000])
    seconds = 2.0 if args.quick else 4.0
    header("Watchers: memory per idle watcher, CPU per poll")
    prose(f"""n tasks each iterate `characters.watch(id)` on their own character, which
        stays `synthesizing`; the fake server runs in its own process. Idle: with a poll
        interval of an hour, once every watcher has had its first update (its first
        GET) they all sit idle; memory per watcher is the growth of tracemalloc's
        traced Python memory from before the first watcher starts (the pool's
        connections already open) over n, and the same for the process RSS in a
        second, untraced run (whose start-up time is the one shown). Polling: a fresh session
        with a 1 s interval for the same n watchers, so polls go out as fast as the
        server answers them; client CPU time per poll over {seconds:g} s, polls counted
        by the server.""")
    rows = [("watchers", "bytes per idle watcher (tracemalloc)", "(RSS)",
             "all watching after s", "client CPU µs per poll", "polls/s")]
    for n in sizes:
        with ServerProcess("fake", "--characters", str(n), "--status", "synthesizing",
                           "--log") as server:
            ids = server.info["ids"]
            rss, ready = asyncio.run(idle(server.info, ids, traced=False))
            traced, _ = asyncio.run(idle(server.info, ids, traced=True))
            server.ask("gets")  # drop the idle runs' requests from the server's log
            cpu, rate = asyncio.run(polling(server, ids, seconds))
        rows.append((f"{n:,}", f"{traced:.0f}", f"{rss:.0f}", f"{ready:.1f}", f"{cpu:.0f}",
                     f"{rate:.0f}"))
        record(args.figures, f"watcher_{n}_bytes_traced", traced)
        record(args.figures, f"watcher_{n}_bytes_rss", rss)
        record(args.figures, f"watcher_{n}_cpu_per_poll_us", cpu)
    table(rows)


if __name__ == "__main__":
    main()
