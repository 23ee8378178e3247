"""Request overhead: `characters.get` through the SDK (default configuration, and with
`rate_limits=None`) vs raw aiohttp (with and without the same decode into models) vs
httpx, client-bound and end-to-end.

    python benchmarks/bench_requests.py [--quick] [--rounds 7] [--seconds 0.6] [--client-bound]

Client-bound: a replay server (see _servers.py) answers with the fake's exact bytes at a
few µs per request, so the client is the bottleneck and throughput ratios are ratios of
client cost. End-to-end: the fake server itself, which saturates first at concurrency 50
(its figures say what a user sees against it, little about the SDK's own cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from _clients import CLIENTS, HTTPX, RAW, SDK, SDK_NO_LIMITS, Call, open_client, unavailable
from _common import header, json_decoder, parser, prose, record, table
from _servers import ServerProcess

# (requests/s, client CPU µs per request) of one round
Sample = tuple[float, float]


async def measure(call: Call, concurrency: int, seconds: float) -> Sample:
    """Requests per second and client CPU microseconds per request over one round."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return done / wall, cpu / done * 1e6


async def interleaved(info: dict[str, Any], clients: list[str], concurrencies: list[int],
                      rounds: int, seconds: float) -> dict[tuple[int, str], list[Sample]]:
    """Rounds of every client in turn (SDK, raw, …, then raw, …, SDK: each round starts
    one client later), so that load from other work on the machine falls on all of them
    alike."""
    url, key, cid = info["url"], info["key"], info["ids"][0]
    samples: dict[tuple[int, str], list[Sample]] = {}
    for concurrency in concurrencies:
        # Fresh clients per concurrency, each warmed with as many connections as it will
        # use: a pool holding more idle connections than workers costs measurably more.
        async with contextlib.AsyncExitStack() as stack:
            calls = {name: await stack.enter_async_context(open_client(name, url, key, cid))
                     for name in clients}
            for call in calls.values():
                for _ in range(2):
                    await asyncio.gather(*(call() for _ in range(concurrency)))
            names = list(calls)
            for round_ in range(rounds):
                # Each round starts with the next client, so that no client always runs
                # right after the same one (httpx leaves the most garbage behind).
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    sample = await measure(calls[name], concurrency, seconds)
                    samples.setdefault((concurrency, name), []).append(sample)
    return samples


def ratio_rows(samples: dict[tuple[int, str], list[Sample]], clients: list[str],
               concurrencies: list[int]) -> list[tuple[str, ...]]:
    """One row per concurrency and client: ratios to raw aiohttp, then absolutes."""
    rows: list[tuple[str, ...]] = [(
        "concurrency", "client", "req/s ÷ raw aiohttp, median", "best ÷ best",
        "CPU/req ÷ raw aiohttp, median", "req/s, median", "req/s, best",
             "client CPU µs/req, median")]
    for concurrency in concurrencies:
        raw = samples[(concurrency, RAW)]
        for name in clients:
            mine = samples[(concurrency, name)]
            per_round = statistics.median(m[0] / r[0] for m, r in zip(mine, raw, strict=True))
            best = max(m[0] for m in mine) / max(r[0] for r in raw)
            cpu = statistics.median(m[1] / r[1] for m, r in zip(mine, raw, strict=True))
            rows.append((str(concurrency), name, f"{per_round:.2f}", f"{best:.2f}",
                         f"{cpu:.2f}", f"{statistics.median(m[0] for m in mine):.0f}",
                         f"{max(m[0] for m in mine):.0f}",
                         f"{statistics.median(m[1] for m in mine):.0f}"))
    return rows


def main() -> None:
    """Run the client-bound and end-to-end comparisons and print their tables."""
    p = parser(__doc__)
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=float, default=0.6, help="per client and round")
    p.add_argument("--client-bound", action="store_true",
                   help="only the client-bound table (no end-to-end run against the fake)")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 7)
    seconds = 0.3 if args.quick else args.seconds
    skipped = {name: why for name in CLIENTS if (why := unavailable(name))}
    clients = [name for name in CLIENTS if name not in skipped]

    header("Request overhead, client-bound: characters.get vs raw aiohttp and httpx")
    bound = [50] if args.quick else [1, 50, 500]
    with ServerProcess("replay") as server:
        cpu0 = server.cpu_seconds()
        served0 = server.ask("served")
        samples = asyncio.run(interleaved(server.info, clients, bound, rounds, seconds))
        server_us = (server.cpu_seconds() - cpu0) / (server.ask("served") - served0) * 1e6
        loop = server.info["loop"]
        size = server.info["response_bytes"]
    cheapest = min(statistics.median(c for _, c in v) for v in samples.values())
    prose(f"""The server is a minimal asyncio protocol ({loop} loop) in its own process that
        answers every request with the {size} bytes the fake server sent for one
        `GET /v1/characters/{{id}}`, captured at start-up; it spent {server_us:.0f} µs of
        CPU per request (the cheapest client {cheapest:.0f} µs), so the client is the
        bottleneck. "sdk" is the default configuration (rate limiter on; its `characters_get` bucket
        is `RateLimit(10**9, 1.0, 10**9)` so it never waits, everything else as
        `RateLimits()`). {rounds} interleaved rounds of {seconds:g} s per client and
        concurrency, every client once per round, each round starting one client later;
        "median" is the median of the
        per-round ratios, "best ÷ best" each client's fastest round over raw aiohttp's
        fastest. Client CPU is the client process's CPU time (user + system) per
        request. The SDK decoded answers with {json_decoder()}.""")
    for name, why in skipped.items():
        prose(f"Not measured: **{name}**: {why}.")
    table(ratio_rows(samples, clients, bound))
    sdk = samples[(50, SDK)]
    raw = samples[(50, RAW)]
    record(args.figures, "bound_best_ratio_sdk",
           max(s[0] for s in sdk) / max(r[0] for r in raw))
    record(args.figures, "bound_median_ratio_sdk",
           statistics.median(s[0] / r[0] for s, r in zip(sdk, raw, strict=True)))
    for name, key in ((SDK, "sdk"), (SDK_NO_LIMITS, "sdk_nolimits"), (RAW, "raw")):
        record(args.figures, f"bound_cpu_us_{key}",
               statistics.median(c for _, c in samples[(50, name)]))
    record(args.figures, "bound_best_ratio_sdk_nolimits",
           max(s[0] for s in samples[(50, SDK_NO_LIMITS)]) / max(r[0] for r in raw))

    if args.client_bound:
        return
    header("Request overhead, end-to-end against the fake server")
    e2e = [c for c in clients if c in (SDK, SDK_NO_LIMITS, RAW, HTTPX)]
    concurrencies = [50] if args.quick else [1, 50]
    with ServerProcess("fake") as server:
        cpu0, wall = server.cpu_seconds(), time.perf_counter()
        samples = asyncio.run(interleaved(server.info, e2e, concurrencies,
                                          max(2, rounds - 2), seconds))
        busy = (server.cpu_seconds() - cpu0) / (time.perf_counter() - wall)
    prose(f"""The same clients against `FakeAurousServer` (bucket limits too large to
        matter, request log off) in its own process: what a user sees against a real
        aiohttp server on this machine. The fake's process was busy {busy:.0%} of the
        time: where it saturates before a client, that client's ratio understates its
        own cost, so the client-bound table above is the one to compare.
        {max(2, rounds - 2)} interleaved rounds of {seconds:g} s.""")
    table(ratio_rows(samples, e2e, concurrencies))


if __name__ == "__main__":
    main()
