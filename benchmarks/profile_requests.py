"""A cProfile of the SDK's request path: 2,000 `characters.get` calls against a fake
server in its own process; prints the SDK's own top costs (aiohttp excluded).

    python benchmarks/profile_requests.py
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import subprocess
import sys

from _common import header
from bench_requests import SERVER

import aurous_async as aa


async def run(url: str, key: str, cid: str) -> str:
    async with aa.AurousSession(key, base_url=url, rate_limits=None) as s:
        await asyncio.gather(*(s.characters.get(cid) for _ in range(50)))
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(2000):
            await s.characters.get(cid)
        profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(r"aurous_async|cattrs|attr/", 12)
    lines = [line for line in out.getvalue().splitlines()
             if "aurous_async" in line or "cattrs" in line or "attr/" in line or "ncalls" in line]
    return "\n".join(lines)


def main() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        header("Profile: the SDK's own costs on the request path (2,000 GETs, tottime)")
        print("```")
        print(asyncio.run(run(info["url"], info["key"], info["id"])))
        print("```")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
