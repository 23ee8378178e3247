"""Our token bucket vs aiolimiter on the same schedules.

    python benchmarks/bench_limiter.py [--quick]

Prints, ratios first: admission accuracy (the most tokens admitted in any window, as a
fraction of what the bucket allows), cost per uncontended acquire (interleaved rounds),
and 10,000 and 100,000 queued waiters (memory, FIFO order, total time vs the ideal).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from _common import header, parser, prose, record, table
from aiolimiter import AsyncLimiter

import aurous_async as aa

RATE, BURST = 200.0, 12  # tokens per second, bucket size (the documented shape, 2000x faster)
Acquire = Callable[[], Awaitable[None]]


def ours(rate: float = RATE, burst: int = BURST) -> Acquire:
    # phase_sync off: nobody reports answers to this limiter (no server here).
    """An acquire on our in-memory token bucket."""
    limiter = aa.InMemoryRateLimiter(
        aa.RateLimits(characters_synthesize=aa.RateLimit(rate, 1.0, burst)), phase_sync=False
    )
    return lambda: limiter.acquire("characters_synthesize")


def theirs(rate: float = RATE, burst: int = BURST) -> Acquire:
    # aiolimiter is a leaky bucket: `burst` tokens per `burst / rate` seconds.
    """An acquire on aiolimiter's leaky bucket of the same shape."""
    limiter = AsyncLimiter(burst, burst / rate)
    return lambda: limiter.acquire()


LIMITERS = (("aurous-async", ours), ("aiolimiter", theirs))


async def admissions(acquire: Acquire, n: int) -> list[float]:
    """Seconds from the start at which each of ``n`` concurrent acquires got in."""
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


async def accuracy(n: int) -> list[tuple[str, ...]]:
    """The admission-accuracy table for ``n`` concurrent acquires."""
    rows: list[tuple[str, ...]] = [
        ("limiter", "admitted / allowed, worst 50 ms window", "worst 250 ms window",
         "makespan / ideal")]
    ideal = (n - BURST) / RATE
    for name, make in LIMITERS:
        stamps = sorted(await admissions(make(), n))
        rows.append((name, f"{worst_window(stamps, 0.05):.3f}", f"{worst_window(stamps, 0.25):.3f}",
                     f"{stamps[-1] / ideal:.3f}"))
    return rows


async def acquire_cost(acquire: Acquire, n: int) -> float:
    """Nanoseconds per uncontended acquire over ``n`` sequential acquires."""
    start = time.perf_counter()
    for _ in range(n):
        await acquire()
    return (time.perf_counter() - start) / n * 1e9


async def overhead(rounds: int, n: int) -> tuple[list[tuple[str, ...]], float, float]:
    """Interleaved rounds, ours then theirs, then theirs then ours, …"""
    acquires = {name: make(rate=1e12, burst=10**9) for name, make in LIMITERS}  # never wait
    ns: dict[str, list[float]] = {name: [] for name in acquires}
    for r in range(rounds):
        for name in (list(acquires) if r % 2 == 0 else list(reversed(acquires))):
            ns[name].append(await acquire_cost(acquires[name], n))
    ratios = [a / b for a, b in zip(ns["aurous-async"], ns["aiolimiter"], strict=True)]
    median, best = statistics.median(ratios), min(ns["aurous-async"]) / min(ns["aiolimiter"])
    rows: list[tuple[str, ...]] = [
        ("limiter", "ns per acquire, median", "best", "÷ aiolimiter, median", "best ÷ best")]
    for name, values in ns.items():
        mine = name == "aurous-async"
        rows.append((name, f"{statistics.median(values):.0f}", f"{min(values):.0f}",
                     f"{median:.2f}" if mine else "1.00", f"{best:.2f}" if mine else "1.00"))
    return rows, median, best


async def waiters(make: Callable[..., Acquire], n: int, rate: float) -> tuple[str, ...]:
    """``n`` tasks queued on one bucket: memory per waiter, order, time to admit all."""
    order: list[int] = []

    async def one(acquire: Acquire, i: int) -> None:
        await acquire()
        order.append(i)

    # Memory, traced: enqueue, read the peak, then cancel (tracing slows everything).
    acquire = make(rate=rate, burst=BURST)
    gc.collect()
    tracemalloc.start()
    tasks = [asyncio.ensure_future(one(acquire, i)) for i in range(n)]
    await asyncio.sleep(0)  # every task runs up to its wait
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Order and time, untraced, from the first acquire to the last admission.
    acquire = make(rate=rate, burst=BURST)
    order.clear()
    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(one(acquire, i) for i in range(n)))
    total = time.perf_counter() - start
    in_order = sum(1 for a, b in itertools.pairwise(order) if b > a) / (n - 1)
    ideal = (n - BURST) / rate
    return (f"{peak / n / 1024:.2f}", f"{in_order:.3f}", f"{total / ideal:.2f}", f"{total:.2f}")


async def main() -> None:
    """Run the three comparisons and print their tables."""
    args = parser(__doc__).parse_args()
    header("Rate limiter: aurous-async vs aiolimiter")
    n = 100 if args.quick else 400
    prose(f"""Admission accuracy: {n} concurrent acquires on a bucket of {BURST} tokens
        refilled at {RATE:.0f} tokens/s (the documented 6/min shape, sped up); the most
        admissions in any 50 ms or 250 ms window over what the bucket allows in it, and
        the last admission over the ideal makespan. 1.000 is exact.""")
    table(await accuracy(n))

    rounds, per_round = (3, 5_000) if args.quick else (9, 20_000)
    rows, median, best = await overhead(rounds, per_round)
    prose(f"""Cost per uncontended acquire (a bucket that never runs dry, so neither ever
        waits): {rounds} interleaved rounds of {per_round:,} sequential acquires each, the
        order of the two alternating from round to round; "median" is the median of the
        per-round ratios, "best ÷ best" our fastest round over theirs.""")
    table(rows)
    record(args.figures, "acquire_ratio_median", median)
    record(args.figures, "acquire_ratio_best", best)

    sizes = (1_000, 5_000) if args.quick else (10_000, 100_000)
    rate = 20_000.0
    prose(f"""Queued waiters: n tasks acquire at once from a bucket of {BURST} tokens
        refilled at {rate:,.0f}/s. Memory is tracemalloc's peak once every task waits,
        per waiter, task and coroutine included (those waiters are then cancelled). In a
        second, untraced run: FIFO order is the fraction of consecutive admissions in
        arrival order; total is the time from the first acquire to the last admission,
        over the ideal (n − {BURST}) ÷ rate.""")
    rows = [("waiters", "limiter", "KiB per waiter", "FIFO order", "total ÷ ideal", "total s")]
    for size in sizes:
        for name, make in LIMITERS:
            rows.append((f"{size:,}", name, *await waiters(make, size, rate)))
    table(rows)


if __name__ == "__main__":
    asyncio.run(main())
