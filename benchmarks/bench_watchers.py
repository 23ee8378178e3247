"""Memory of idle watchers: 10,000 characters watched at once.

    python benchmarks/bench_watchers.py [--watchers 10000]

Each watcher is a task iterating `characters.watch(id)` on a character that stays
`synthesizing`; once every watcher has its first update they all sit idle between polls.
RSS is read from /proc before and after; the fake server runs in its own process so its
memory is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time

from _common import header, table

import aurous_async as aa

SERVER = """
import asyncio, json, sys
from aurous_async.testing import BucketLimit, FakeAurousServer
async def main(n):
    huge = BucketLimit(per_minute=10**9, burst=10**9)
    fake = FakeAurousServer(buckets={"characters_get": huge}, synthesis_seconds=10**9)
    fake.keep_request_log = False
    async with fake:
        ids = [fake.add_character(status="synthesizing") for _ in range(n)]
        print(json.dumps({"url": fake.base_url, "key": fake.api_key, "ids": ids}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def run(url: str, key: str, ids: list[str]) -> list[tuple[str, ...]]:
    # Huge GET budget on both sides: this measures memory, not pacing.
    huge = aa.RateLimit(10**9, 1.0, 10**9)
    limits = aa.RateLimits(characters_get=huge)
    policy = aa.PollPolicy(interval=3600, max_interval=3600)  # idle: no poll during the test
    async with aa.AurousSession(key, base_url=url, rate_limits=limits, poll=policy) as s:
        await s.characters.get(ids[0])  # warm up the connection pool and imports
        gc.collect()
        before = rss_kib()
        first = asyncio.Event()
        seen = 0

        async def watcher(cid: str) -> None:
            nonlocal seen
            async for _ in s.characters.watch(cid):
                seen += 1
                if seen == len(ids):
                    first.set()

        started = time.perf_counter()
        tasks = [asyncio.create_task(watcher(cid)) for cid in ids]
        await first.wait()
        ready = time.perf_counter() - started
        gc.collect()
        after = rss_kib()
        per_watcher = (after - before) * 1024 / len(ids)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return [
            ("watchers", "RSS per idle watcher (bytes)", "target (bytes)", "ratio to target",
             "all watching after s"),
            (str(len(ids)), f"{per_watcher:.0f}", "5120", f"{per_watcher / 5120:.2f}",
             f"{ready:.1f}"),
        ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=10_000)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.watchers)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        header(f"Memory: {args.watchers:,} concurrent idle watchers")
        table(asyncio.run(run(info["url"], info["key"], info["ids"])))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
