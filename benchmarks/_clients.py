"""The clients the request benchmarks compare, each fetching one character, and a
command line that runs exactly N requests with one of them (what cachegrind measures).

    python benchmarks/_clients.py CLIENT URL KEY CHARACTER_ID --requests N [--concurrency C]

Clients (all with 100 connections, the SDK's default pool):

- ``sdk``: ``AurousSession`` as users run it, rate limiter on. Its ``characters_get``
  bucket is ``RateLimit(10**9, 1.0, 10**9)`` instead of the documented 120/min, so it
  never waits, while every request still takes the same limiter path (acquire, send
  tracing, header feedback) as with ``RateLimits()``.
- ``sdk, rate_limits=None``: the same with client pacing off.
- ``raw aiohttp``: ``ClientSession.get`` + ``response.json()``: a dict, no model.
- ``raw aiohttp + decode``: the same plus ``Character.from_dict`` (the SDK's decode into
  its models) when this version of the SDK has it.
- ``httpx``: ``AsyncClient.get`` + ``.json()``, with ``sniffio`` installed (without it
  httpcore retries a failed import on every request and httpx looks ~3x slower).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

import aurous_async as aa

Call = Callable[[], Awaitable[object]]

SDK, SDK_NO_LIMITS, RAW, RAW_DECODE, HTTPX = (
    "sdk", "sdk, rate_limits=None", "raw aiohttp", "raw aiohttp + decode", "httpx")
CLIENTS = (SDK, SDK_NO_LIMITS, RAW, RAW_DECODE, HTTPX)
CONNECTIONS = 100
#: The default limiter with a bucket that never runs dry (see the module docstring).
NEVER_WAITS = aa.RateLimits(characters_get=aa.RateLimit(10**9, 1.0, 10**9))


class Unavailable(Exception):
    """This client cannot run here; the message says why."""


def unavailable(name: str) -> str | None:
    """Why ``name`` cannot run in this environment, or None if it can."""
    if name == RAW_DECODE and not hasattr(aa.Character, "from_dict"):
        return "this version of aurous_async has no public decode (`Character.from_dict`)"
    if name == HTTPX:
        missing = [m for m in ("httpx", "sniffio") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{' and '.join(missing)} not installed: the httpx row would be unfair "
                    "(install the benchmark extra)")
    return None


@contextlib.asynccontextmanager
async def open_client(name: str, url: str, key: str, cid: str, *,
                      distinct: int = 0) -> AsyncIterator[Call]:
    """A zero-argument coroutine function that fetches character ``cid`` once (an SDK
    client or raw aiohttp with ``distinct=n`` fetches n ids in turn, ``cid_0`` … —
    against ``replay --distinct``, whose answers ignore the path)."""
    reason = unavailable(name)
    if reason:
        raise Unavailable(reason)
    if name in (SDK, SDK_NO_LIMITS):
        limits = NEVER_WAITS if name == SDK else None
        async with aa.AurousSession(key, base_url=url, rate_limits=limits,
                                    connection_limit=CONNECTIONS) as session:
            if distinct:
                ids = itertools.cycle([f"{cid}_{i}" for i in range(distinct)])
                yield lambda: session.characters.get(next(ids))
            else:
                yield lambda: session.characters.get(cid)
        return
    if distinct and name != RAW:
        raise Unavailable("only the SDK clients and raw aiohttp fetch distinct ids")
    path = f"{url}/v1/characters/{cid}"
    headers = {"X-Api-Key": key}
    if name == HTTPX:
        import httpx

        pool = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(headers=headers, limits=pool) as hx:

            async def via_httpx() -> object:
                return (await hx.get(path)).json()

            yield via_httpx
        return
    decode: Callable[[Any], object] = getattr(aa.Character, "from_dict", lambda d: d)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as raw:

        async def via_aiohttp() -> object:
            async with raw.get(path) as response:
                return await response.json()

        if distinct:
            paths = itertools.cycle([f"{path}_{i}" for i in range(distinct)])

            async def via_aiohttp_distinct() -> object:
                async with raw.get(next(paths)) as response:
                    return await response.json()

            yield via_aiohttp_distinct
            return

        async def via_aiohttp_decode() -> object:
            async with raw.get(path) as response:
                return decode(await response.json())

        yield via_aiohttp if name == RAW else via_aiohttp_decode


async def run_exactly(call: Call, requests: int, concurrency: int) -> None:
    """``requests`` calls from ``concurrency`` workers (after a warm-up that opens the
    connections and fills caches the same way whatever ``requests`` is)."""
    await asyncio.gather(*(call() for _ in range(2 * concurrency)))
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _main(args: argparse.Namespace) -> None:
    async with open_client(args.client, args.url, args.key, args.id,
                           distinct=args.distinct) as call:
        await run_exactly(call, args.requests, args.concurrency)


def main() -> None:
    """Run one client for exactly --requests requests (what cachegrind counts)."""
    p = argparse.ArgumentParser()
    p.add_argument("client", choices=CLIENTS)
    p.add_argument("url")
    p.add_argument("key")
    p.add_argument("id")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--distinct", type=int, default=0, metavar="N",
                   help="SDK clients and raw aiohttp: fetch N ids in turn (with replay "
                        "--distinct)")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
