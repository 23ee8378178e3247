"""One OS process of the multi-process Redis test: fans out resynthesizes through a
RedisRateLimiter shared with its siblings, then prints its admission times as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aurous_async as aa


async def main(base_url: str, api_key: str, redis_url: str, prefix: str, ids: list[str],
               limits_json: str) -> None:
    rate, period, burst = json.loads(limits_json)
    limits = aa.RateLimits(characters_synthesize=aa.RateLimit(rate, period, burst))
    limiter = aa.RedisRateLimiter.from_url(redis_url, limits, prefix=prefix)
    stamps: list[float] = []
    async with aa.AurousSession(api_key, base_url=base_url, rate_limits=limiter) as s:
        async def one(cid: str) -> None:
            await s.characters.resynthesize(cid)
            stamps.append(time.time())

        await asyncio.gather(*(one(cid) for cid in ids))
    await limiter.aclose()
    print(json.dumps(stamps))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(","),
                     sys.argv[6]))
