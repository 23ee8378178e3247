"""Request overhead: `characters.get` through the SDK (rate limits off) vs raw aiohttp
vs raw httpx, against one fake server running in its own process.

    python benchmarks/bench_requests.py [--seconds 3]

The server process takes one core, the client the other; requests/s is shared by both
sides, so client CPU time per request (measured in the client process) is the cleaner
figure of what each client costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from _common import header, table

import aurous_async as aa

SERVER = """
import asyncio, json, sys
from aurous_async.testing import BucketLimit, FakeAurousServer
async def main():
    huge = BucketLimit(per_minute=10**9, burst=10**9)
    fake = FakeAurousServer(buckets={"characters_get": huge, "get": huge})
    fake.keep_request_log = False
    async with fake:
        cid = fake.add_character(name="bench")
        print(json.dumps({"url": fake.base_url, "key": fake.api_key, "id": cid}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


ROUNDS = 7


async def measure(call: Callable[[], Awaitable[object]], concurrency: int,
                  seconds: float) -> tuple[float, float]:
    """Requests per second and client CPU microseconds per request."""
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


async def run(url: str, key: str, cid: str, seconds: float) -> list[tuple[str, ...]]:
    headers = {"X-Api-Key": key}
    path = f"{url}/v1/characters/{cid}"
    rows = [("concurrency", "SDK / aiohttp", "SDK / httpx", "SDK req/s", "aiohttp req/s",
             "httpx req/s", "SDK CPU µs/req", "aiohttp CPU µs/req", "httpx CPU µs/req")]
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    connector = aiohttp.TCPConnector(limit=100)
    async with aa.AurousSession(key, base_url=url, rate_limits=None) as sdk, \
            aiohttp.ClientSession(headers=headers, connector=connector) as raw, \
            httpx.AsyncClient(headers=headers, limits=limits) as hx:

        async def via_sdk() -> object:
            return await sdk.characters.get(cid)

        async def via_aiohttp() -> object:
            async with raw.get(path) as response:
                return await response.json()

        async def via_httpx() -> object:
            return (await hx.get(path)).json()

        for call in (via_sdk, via_aiohttp, via_httpx):  # warm up connections
            await asyncio.gather(*(call() for _ in range(50)))
        for concurrency in (1, 50, 500):
            # Short rounds, interleaved, medians: this machine's noise moves single
            # seconds-long runs by 20 %, and interleaving spreads it over all three.
            samples: dict[str, list[tuple[float, float]]] = {"sdk": [], "aiohttp": [], "httpx": []}
            for _ in range(ROUNDS):
                samples["sdk"].append(await measure(via_sdk, concurrency, seconds / ROUNDS))
                samples["aiohttp"].append(await measure(via_aiohttp, concurrency, seconds / ROUNDS))
                samples["httpx"].append(await measure(via_httpx, concurrency, seconds / ROUNDS))
            rps = {k: statistics.median(r for r, _ in v) for k, v in samples.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items()}
            sdk_vs_raw = statistics.median(s[0] / a[0] for s, a in zip(samples["sdk"], samples["aiohttp"], strict=True))
            sdk_vs_httpx = statistics.median(s[0] / h[0] for s, h in zip(samples["sdk"], samples["httpx"], strict=True))
            rows.append((str(concurrency), f"{sdk_vs_raw:.2f}", f"{sdk_vs_httpx:.2f}",
                         f"{rps['sdk']:.0f}", f"{rps['aiohttp']:.0f}", f"{rps['httpx']:.0f}",
                         f"{cpu['sdk']:.0f}", f"{cpu['aiohttp']:.0f}", f"{cpu['httpx']:.0f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=7.0, help="per client and concurrency")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        header("Request overhead: characters.get, SDK vs raw aiohttp vs raw httpx")
        print(f"Medians of {ROUNDS} interleaved rounds, {args.seconds:g} s per client and "
              "concurrency in all; the fake server runs in its own process.\n")
        table(asyncio.run(run(info["url"], info["key"], info["id"], args.seconds)))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
