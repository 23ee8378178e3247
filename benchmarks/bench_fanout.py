"""1,000 and 5,000 characters resynthesized and watched to the end under the documented
buckets (time-scaled), through the SDK and written the naive way (aiohttp + aiolimiter +
a polling loop per character).

    python benchmarks/bench_fanout.py [--quick] [--characters 1000 5000] [--scale 500]

Prints makespan ÷ the bucket-imposed bound, GETs per character (counted by the fake
server), 429s and the wall time.
The bound: the first 12 go at once, then one every 10 s (6/min), and the last one
still needs its synthesis (45 s ± 20 % here) — (n − 12) × 10 s + 45 s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from _common import header, parser, prose, record, table
from aiolimiter import AsyncLimiter

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, ScaledClock

SYNTHESIS = 45.0
GET_CHARACTER = "GET /v1/characters/{character_id}"


def bound(n: int) -> float:
    """The makespan the ``characters_synthesize`` bucket imposes on ``n`` characters."""
    return max(0, n - 12) * 10.0 + SYNTHESIS


@contextlib.asynccontextmanager
async def fake_with_characters(
    n: int, scale: float
) -> AsyncIterator[tuple[ScaledClock, FakeAurousServer, list[str]]]:
    """The same scaled fake server and n ready characters for every client compared."""
    clock = ScaledClock(scale)
    async with FakeAurousServer(clock=clock, synthesis_seconds=SYNTHESIS, synthesis_jitter=0.2,
                                credits=10 * n) as fake:
        # The request log stays on: it is how GETs are counted, by the server.
        yield clock, fake, [fake.add_character() for _ in range(n)]


async def with_sdk(n: int, scale: float) -> dict[str, Any]:
    """The SDK's way: ``resynthesize_many(ids, auto_save=True)``."""
    async with fake_with_characters(n, scale) as (clock, fake, ids):
        async with aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
            start = clock.monotonic()
            ok = 0
            async for result in s.characters.resynthesize_many(ids, auto_save=True):
                ok += result.ok
            makespan = clock.monotonic() - start
        return {"ok": ok, "makespan": makespan, **served(fake)}


async def naive(n: int, scale: float) -> dict[str, Any]:
    """What a user writes by hand: aiolimiter at 6/min, then poll every 2 s (scaled)."""
    async with fake_with_characters(n, scale) as (clock, fake, ids):
        # aiolimiter's bucket of 12 drains at 6/min; time is scaled by dividing the period.
        limiter = AsyncLimiter(12, 120 / scale)
        headers = {"X-Api-Key": fake.api_key}

        async def one(http: aiohttp.ClientSession, cid: str) -> bool:
            for _ in range(20):
                async with limiter:
                    r = await http.post(f"{fake.base_url}/v1/characters/{cid}/resynthesize")
                if r.status == 200:
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / scale)
            while True:
                await asyncio.sleep(2 / scale)
                r = await http.get(f"{fake.base_url}/v1/characters/{cid}")
                if r.status == 429:
                    continue
                status = (await r.json())["status"]
                if status == "reviewing":
                    r = await http.post(f"{fake.base_url}/v1/characters/{cid}/save")
                    return r.status == 200
                if status in ("ready", "failed"):
                    return bool(status == "ready")

        start = clock.monotonic()
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
            results = await asyncio.gather(*(one(http, cid) for cid in ids))
        makespan = clock.monotonic() - start
        return {"ok": sum(results), "makespan": makespan, **served(fake)}


def served(fake: FakeAurousServer) -> dict[str, Any]:
    """What the server saw: GETs of a character (429s included), 429s of any route."""
    gets = collections.Counter(r.path for r in fake.requests_to(GET_CHARACTER))
    return {"gets": sum(gets.values()), "max_gets": max(gets.values(), default=0),
            "429s": sum(fake.rate_limited.values())}


async def main() -> None:
    """Run both clients at each size and print the table."""
    p = parser(__doc__)
    p.add_argument("--characters", type=int, nargs="+")
    # 500x keeps the loop (SDK and fake server share one core) well below saturation; at
    # 2000x the CPU cost of a request, a few ms, is tens of API seconds and it shows.
    p.add_argument("--scale", type=float, default=500.0)
    args = p.parse_args()
    sizes = args.characters or ([50, 200] if args.quick else [1000, 5000])
    header(f"Fan-out: {' and '.join(f'{n:,}' for n in sizes)} characters resynthesized "
           "and watched")
    prose(f"""Each client resynthesizes n ready characters and follows each to its end
        (saving it when it stops in `reviewing`) against `FakeAurousServer` with the
        documented buckets, in the same process, on a clock running {args.scale:g}x
        (synthesis takes 45 s ± 20 % of API time). The bound is what the
        `characters_synthesize` bucket (12 at once, then 6 a minute) imposes: the first
        12 go at once, then one every 10 s, and the last still needs its synthesis, so
        (n − 12) × 10 s + 45 s. GETs per character are counted by the server (every
        `GET /v1/characters/{{id}}`, 429s included); 429s are the server's, on any
        route. The naive client is aiohttp + aiolimiter at 6/min and a 2 s polling loop
        per character.""")
    rows = [("characters", "client", "makespan ÷ bound", "GETs per character",
             "most GETs of one character", "429s", "done", "wall s")]
    for n in sizes:
        for name, job in (("aurous-async", with_sdk), ("naive aiohttp+aiolimiter", naive)):
            wall = time.perf_counter()
            result = await job(n, args.scale)
            wall = time.perf_counter() - wall
            ratio, per_character = result["makespan"] / bound(n), result["gets"] / n
            rows.append((f"{n:,}", name, f"{ratio:.3f}", f"{per_character:.2f}",
                         str(result["max_gets"]), str(result["429s"]), f"{result['ok']}/{n}",
                         f"{wall:.1f}"))
            if name == "aurous-async":
                record(args.figures, f"fanout_{n}_makespan_ratio", ratio)
                record(args.figures, f"fanout_{n}_gets_per_character", per_character)
                record(args.figures, f"fanout_{n}_429s", result["429s"])
    table(rows)


if __name__ == "__main__":
    asyncio.run(main())
