"""Our token bucket vs aiolimiter on the same schedules.

    python benchmarks/bench_limiter.py

Prints, ratios first: admission accuracy (the most tokens admitted in any window, as a
fraction of what the bucket allows), overhead per uncontended acquire, and 10,000 queued
waiters (memory, FIFO order, total time vs the ideal).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from _common import header, table
from aiolimiter import AsyncLimiter

import aurous_async as aa

RATE, BURST = 200.0, 12  # tokens per second, bucket size (the documented shape, 2000x faster)


def ours(rate: float = RATE, burst: int = BURST) -> Callable[[], Awaitable[None]]:
    limiter = aa.InMemoryRateLimiter(
        aa.RateLimits(characters_synthesize=aa.RateLimit(rate, 1.0, burst)), phase_sync=False
    )
    return lambda: limiter.acquire("characters_synthesize")


def theirs(rate: float = RATE, burst: int = BURST) -> Callable[[], Awaitable[None]]:
    # aiolimiter is a leaky bucket: `burst` tokens per `burst / rate` seconds.
    limiter = AsyncLimiter(burst, burst / rate)
    return lambda: limiter.acquire()


async def admissions(acquire: Callable[[], Awaitable[None]], n: int) -> list[float]:
    stamps: list[float] = []

    async def one() -> None:
        await acquire()
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return [t - start for t in stamps]


def worst_window(stamps: list[float], window: float) -> float:
    """The most admissions in any `window` seconds, over what the bucket allows then."""
    allowed = BURST + RATE * window
    worst = 0
    j = 0
    for i in range(len(stamps)):
        while stamps[j] < stamps[i] - window:
            j += 1
        worst = max(worst, i - j + 1)
    return worst / allowed


async def accuracy() -> list[tuple[str, ...]]:
    rows = [("limiter", "admitted / allowed, worst 50 ms window", "worst 250 ms window",
             "makespan / ideal")]
    n = 400
    ideal = (n - BURST) / RATE
    for name, make in (("aurous-async", ours), ("aiolimiter", theirs)):
        stamps = sorted(await admissions(make(), n))
        rows.append((name, f"{worst_window(stamps, 0.05):.3f}", f"{worst_window(stamps, 0.25):.3f}",
                     f"{stamps[-1] / ideal:.3f}"))
    return rows


async def overhead() -> tuple[list[tuple[str, ...]], float]:
    n = 100_000
    results = {}
    for name, make in (("aurous-async", ours), ("aiolimiter", theirs)):
        acquire = make(rate=1e12, burst=10**9)  # never waits
        start = time.perf_counter()
        for _ in range(n):
            await acquire()
        results[name] = (time.perf_counter() - start) / n * 1e9
    ratio = results["aurous-async"] / results["aiolimiter"]
    rows = [("limiter", "ns per uncontended acquire")]
    rows += [(k, f"{v:.0f}") for k, v in results.items()]
    return rows, ratio


async def many_waiters() -> list[tuple[str, ...]]:
    n = 10_000
    rows = [("limiter", "KiB per waiter", "FIFO order", "total / ideal", "total s")]
    rate = 20_000.0
    for name, make in (("aurous-async", ours), ("aiolimiter", theirs)):
        acquire = make(rate=rate, burst=BURST)
        order: list[int] = []

        async def one(i: int, acquire: Callable[[], Awaitable[None]] = acquire,
                      order: list[int] = order) -> None:
            await acquire()
            order.append(i)

        gc.collect()
        tracemalloc.start()
        start = time.perf_counter()
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        await asyncio.sleep(0)
        peak = tracemalloc.get_traced_memory()[1]
        await asyncio.gather(*tasks)
        total = time.perf_counter() - start
        tracemalloc.stop()
        in_order = sum(1 for a, b in itertools.pairwise(order) if b > a) / (n - 1)
        ideal = (n - BURST) / rate
        rows.append((name, f"{peak / n / 1024:.2f}", f"{in_order:.3f}", f"{total / ideal:.2f}",
                     f"{total:.2f}"))
    return rows


async def main() -> None:
    header("Rate limiter: aurous-async vs aiolimiter")
    print(f"Bucket: {BURST} burst, {RATE:.0f} tokens/s (the documented 6/min shape, sped up).\n")
    print("### Admission accuracy (400 concurrent acquires; 1.000 = exactly what the bucket allows)\n")
    table(await accuracy())
    rows, ratio = await overhead()
    print(f"\n### Overhead per uncontended acquire: ours / aiolimiter = {ratio:.2f}x\n")
    table(rows)
    print("\n### 10,000 queued waiters (FIFO order = fraction of wake-ups in arrival order)\n")
    table(await many_waiters())


if __name__ == "__main__":
    asyncio.run(main())
