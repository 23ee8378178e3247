from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from aurous_async.testing import FakeAurousServer, FakeClock, ScaledClock

# The Ctrl-C tests press Ctrl-C on this very process (and on children it starts). A suite
# started in the background by a shell without job control (`pytest … &`, nohup) inherits
# SIGINT ignored, and those tests would hang instead of pressing it: restore the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class RawClient:
    """Plain aiohttp calls against the fake, for testing the fake itself."""

    def __init__(self, http: aiohttp.ClientSession, server: FakeAurousServer) -> None:
        self.http = http
        self.server = server

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = "default",
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        sent = dict(headers or {})
        if key == "default":
            key = self.server.api_key
        if key is not None:
            sent["X-Api-Key"] = key
        async with self.http.request(
            method, self.server.base_url + path, json=json, data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            try:
                import json as jsonlib

                body = jsonlib.loads(text) if text else None
            except ValueError:
                body = text
            return response.status, body, response.headers


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


_T = TypeVar("_T")


async def on_virtual_time(clock: FakeClock, fake: FakeAurousServer, work: Awaitable[_T], *,
                          real_limit: float = 20.0) -> _T:
    """Run ``work`` while ``clock`` jumps from timer to timer — but only once every
    request over loopback has been answered, so a round trip takes no virtual time and
    the outcome cannot depend on how busy the machine is (scaled real time turns a
    millisecond of scheduling noise into an API second)."""
    task = asyncio.ensure_future(work)
    give_up = time.monotonic() + real_limit
    while not task.done():
        if time.monotonic() > give_up:  # a hang guard, not a measurement
            task.cancel()
            raise AssertionError(f"not done after {real_limit} s of real time")
        await _settle(fake)
        due = clock.next_deadline()
        if task.done():
            break
        if due is None:
            # Nothing scheduled on the clock: the work waits on real I/O alone.
            await asyncio.sleep(0.001)
            continue
        await clock.advance(max(0.0, due - clock.monotonic()))
    return await task


async def _settle(fake: FakeAurousServer) -> None:
    """Yield until no request is in progress at ``fake`` and none arrived over two
    rounds of loop passes (a request on its way is a few passes from the server)."""
    quiet, seen = 0, -1
    while quiet < 2:
        for _ in range(20):
            await asyncio.sleep(0)
        arrived = len(fake.requests)
        if fake.requests_in_progress or arrived != seen:
            quiet, seen = 0, arrived
            if fake.requests_in_progress:
                await asyncio.sleep(0.0005)  # a handler waits on real I/O
        else:
            quiet += 1


def sdk_tasks() -> list[asyncio.Task[Any]]:
    """Unfinished tasks running SDK code (not the fake server's, not the test's)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code else ""
        if "aurous_async" in filename and "testing" not in filename and not task.done():
            found.append(task)
    return found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fast() -> ScaledClock:
    """A thousandfold clock, shared by a fake and the session under test."""
    return ScaledClock(1000)


@pytest.fixture
async def ffake(fast: ScaledClock) -> AsyncIterator[FakeAurousServer]:
    """A fake server on the ``fast`` clock, with 30-second syntheses (30 ms real)."""
    async with FakeAurousServer(clock=fast, synthesis_seconds=30) as server:
        yield server


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeAurousServer]:
    async with FakeAurousServer(clock=clock, synthesis_seconds=30.0) as server:
        yield server


@pytest.fixture
async def raw(fake: FakeAurousServer) -> AsyncIterator[RawClient]:
    async with aiohttp.ClientSession() as http:
        yield RawClient(http, fake)


ATTRS = {"gender": "female", "age": 28, "hair_color": "black"}


@pytest.fixture
def auto_clock() -> FakeClock:
    """A clock whose sleeps advance time at once: retries and backoff take no real time."""
    return FakeClock(auto_advance=True)


@pytest.fixture
async def sfake(auto_clock: FakeClock) -> AsyncIterator[FakeAurousServer]:
    """A fake server on the auto-advancing clock the SDK session shares."""
    async with FakeAurousServer(clock=auto_clock, synthesis_seconds=30.0) as server:
        yield server


@pytest.fixture
async def session(sfake: FakeAurousServer, auto_clock: FakeClock) -> AsyncIterator[Any]:
    from aurous_async import AurousSession

    async with AurousSession(sfake.api_key, base_url=sfake.base_url, clock=auto_clock,
                             timeout=5.0) as s:
        yield s


@pytest.fixture(scope="session")
def redis_url() -> Any:
    """A real redis-server on a free loopback port, for the whole test session.

    Skipped when no redis-server is installed, unless AUROUS_REQUIRE_REDIS=1 (CI sets
    it), where a missing server is a failure.
    """
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("AUROUS_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed (AUROUS_REQUIRE_REDIS=1)")
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="aurous-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)
