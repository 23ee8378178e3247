"""1,000 characters resynthesized and watched to the end under the documented buckets
(time-scaled), through the SDK and written the naive way (aiohttp + aiolimiter + a
polling loop per character).

    python benchmarks/bench_fanout.py [--characters 1000] [--scale 500]

Prints makespan ÷ the bucket-imposed bound, GETs per character, 429s and peak RSS.
The bound: the first 12 go at once, then one every 10 s (6/min), and the last one
still needs its synthesis (45 s ± 20 % here) — (n − 12) × 10 s + 45 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from _common import header, peak_rss_mib, table
from aiolimiter import AsyncLimiter

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, ScaledClock

SYNTHESIS = 45.0


def bound(n: int) -> float:
    return max(0, n - 12) * 10.0 + SYNTHESIS


@contextlib.asynccontextmanager
async def fake_with_characters(
    n: int, scale: float
) -> AsyncIterator[tuple[ScaledClock, FakeAurousServer, list[str]]]:
    """The same scaled fake server and n ready characters for every client compared."""
    clock = ScaledClock(scale)
    async with FakeAurousServer(clock=clock, synthesis_seconds=SYNTHESIS, synthesis_jitter=0.2,
                                credits=10 * n) as fake:
        fake.keep_request_log = False
        yield clock, fake, [fake.add_character() for _ in range(n)]


async def with_sdk(n: int, scale: float) -> dict[str, Any]:
    async with fake_with_characters(n, scale) as (clock, fake, ids):
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            start = clock.monotonic()
            ok = 0
            async for result in s.characters.resynthesize_many(ids, auto_save=True):
                ok += result.ok
            makespan = clock.monotonic() - start
            gets = s._scheduler.polls_sent
        return {"ok": ok, "makespan": makespan, "gets": gets, "429s": sum(fake.rate_limited.values())}


async def naive(n: int, scale: float) -> dict[str, Any]:
    """What a user writes by hand: aiolimiter at 6/min, then poll every 2 s (scaled)."""
    async with fake_with_characters(n, scale) as (clock, fake, ids):
        # aiolimiter's bucket of 12 drains at 6/min; time is scaled by dividing the period.
        limiter = AsyncLimiter(12, 120 / scale)
        gets = 0
        headers = {"X-Api-Key": fake.api_key}

        async def one(http: aiohttp.ClientSession, cid: str) -> bool:
            nonlocal gets
            for _ in range(20):
                async with limiter:
                    r = await http.post(f"{fake.base_url}/v1/characters/{cid}/resynthesize")
                if r.status == 200:
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / scale)
            while True:
                await asyncio.sleep(2 / scale)
                gets += 1
                r = await http.get(f"{fake.base_url}/v1/characters/{cid}")
                if r.status == 429:
                    continue
                status = (await r.json())["status"]
                if status == "reviewing":
                    r = await http.post(f"{fake.base_url}/v1/characters/{cid}/save")
                    return r.status == 200
                if status in ("ready", "failed"):
                    return status == "ready"

        start = clock.monotonic()
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
            results = await asyncio.gather(*(one(http, cid) for cid in ids))
        makespan = clock.monotonic() - start
        return {"ok": sum(results), "makespan": makespan, "gets": gets,
                "429s": sum(fake.rate_limited.values())}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--characters", type=int, default=1000)
    # 500x keeps the loop (SDK and fake server share one core) well below saturation; at
    # 2000x the CPU cost of a request, a few ms, is tens of API seconds and it shows.
    parser.add_argument("--scale", type=float, default=500.0)
    args = parser.parse_args()
    n = args.characters
    header(f"Fan-out: {n} characters resynthesized and watched (time x{args.scale:g})")
    rows = [("client", "makespan / bound", "GETs per character", "429s", "done", "wall s",
             "peak RSS MiB")]
    for name, job in (("aurous-async", with_sdk), ("naive aiohttp+aiolimiter", naive)):
        wall = time.perf_counter()
        result = await job(n, args.scale)
        wall = time.perf_counter() - wall
        rows.append((name, f"{result['makespan'] / bound(n):.3f}", f"{result['gets'] / n:.2f}",
                     str(result["429s"]), f"{result['ok']}/{n}", f"{wall:.1f}",
                     f"{peak_rss_mib():.0f}"))
    print(f"Bound: {bound(n):.0f} API seconds.\n")
    table(rows)
    print("\n(peak RSS is the process's, cumulative across rows)")


if __name__ == "__main__":
    asyncio.run(main())
