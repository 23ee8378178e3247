"""Servers the benchmarks talk to, each in its own process so the client's CPU time is the
client's alone.

- ``fake``: the SDK's ``FakeAurousServer`` with bucket limits too large to matter and N
  seeded characters; on the command ``gets`` it answers how many
  ``GET /v1/characters/{id}`` it has served since the last ``gets``.
- ``replay``: a minimal asyncio server (uvloop when installed) that answers every request
  with the exact bytes the fake sent for one ``GET /v1/characters/{id}``, captured once at
  start-up. It costs a few µs per request, so the client is the bottleneck; on the
  command ``served`` it answers how many requests it has answered. With ``--distinct``
  it cycles through 5,000 variants of those bytes, each with its own timestamps,
  ``gender`` and ref URLs (same lengths), so a client can keep nothing from one answer
  to the next.

The parent side is :class:`ServerProcess`::

    with ServerProcess("replay") as server:
        server.info["url"], server.ask("served"), server.cpu_seconds()
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from aurous_async.testing import BucketLimit, FakeAurousServer

HERE = Path(__file__).resolve().parent
GET_CHARACTER = "GET /v1/characters/{character_id}"


class ServerProcess:
    """One server process: its start-up facts (``info``), a command channel, its CPU."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_servers.py"), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the {args[0]} server did not start (see its stderr above)")
        self.info: dict[str, Any] = json.loads(line)

    def ask(self, command: str) -> Any:
        """Send one command line; returns the server's JSON answer."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Stop the server process."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- the server side ---------------------------------------------------------------------


def _fake(**kwargs: Any) -> FakeAurousServer:
    # Buckets this large never answer 429, and their X-RateLimit-Remaining headers never
    # make a client limiter slow down: these servers measure cost, not pacing.
    huge = BucketLimit(per_minute=10**9, burst=10**9)
    return FakeAurousServer(buckets={"characters_get": huge, "get": huge}, **kwargs)


async def _commands(answer: dict[str, Any]) -> None:
    """Answer command lines from stdin until it closes (the parent has gone)."""
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        print(json.dumps(answer[line]()), flush=True)


async def serve_fake(characters: int, status: str, log: bool) -> None:
    """Serve the fake with ``characters`` seeded characters; answer ``gets``."""
    fake = _fake(synthesis_seconds=10**9)
    fake.keep_request_log = log
    async with fake:
        ids = [fake.add_character(name="bench", status=status) for _ in range(characters)]
        print(json.dumps({"url": fake.base_url, "key": fake.api_key, "ids": ids}), flush=True)

        def gets() -> int:
            count = len(fake.requests_to(GET_CHARACTER))
            fake.requests.clear()  # 50,000 watchers poll a lot: keep the log small
            return count

        await _commands({"gets": gets})


async def capture() -> tuple[bytes, str, str]:
    """The fake's exact response bytes to one GET /v1/characters/{id}, its key and id."""
    async with _fake() as fake:
        cid = fake.add_character(name="bench")
        reader, writer = await asyncio.open_connection(fake.host, fake.port)
        writer.write(f"GET /v1/characters/{cid} HTTP/1.1\r\nHost: {fake.host}:{fake.port}\r\n"
                     f"X-Api-Key: {fake.api_key}\r\nAccept: */*\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200 ") or length is None:
            raise RuntimeError("the fake did not answer a plain 200 with a Content-Length")
        body = await reader.readexactly(int(length.group(1)))
        writer.close()
        await writer.wait_closed()
        return head + body, fake.api_key, cid


#: Variants served by ``replay --distinct``: more than any table a client keeps.
DISTINCT = 5000


def variants(response: bytes, count: int) -> list[bytes]:
    """``count`` copies of ``response``, each with other times, another ``gender`` and
    other signed ref URLs (the same lengths, so Content-Length still holds)."""
    times = sorted(set(re.findall(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', response)))
    tokens = re.findall(rb"token=([A-Za-z0-9_-]{16,})", response)
    if b'"gender": "female"' not in response or not times or not tokens:
        raise RuntimeError("the captured answer has no timestamps, gender or ref URLs to vary")
    made = []
    for i in range(count):
        variant = response.replace(b'"gender": "female"', b'"gender": "f%05d"' % i)
        for n, token in enumerate(tokens):
            variant = variant.replace(token, (b"v%05dr%d" % (i, n)).ljust(len(token), b"x"))
        for n, time in enumerate(times):
            # One day per variant, a minute per field: every value new in every answer.
            variant = variant.replace(time, b'"2031-%02d-%02dT%02d:%02d:00Z"' % (
                1 + i // 28 % 12, 1 + i % 28, i // 336 % 24, n))
        made.append(variant)
    return made


class Replay(asyncio.Protocol):
    """Answers each request (a bodiless GET ends at its blank line) with the next of
    ``responses``."""

    responses: ClassVar[list[bytes]] = []
    served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")
        if count:
            if not data.startswith(b"GET /v1/characters/"):
                self.transport.close()  # only ever meant for this one route
                return
            answers = Replay.responses
            self.transport.write(b"".join(answers[(Replay.served + i) % len(answers)]
                                          for i in range(count)))
            Replay.served += count
            data = data[data.rindex(b"\r\n\r\n") + 4:]
        self.pending = data


async def serve_replay(loop_name: str, distinct: bool) -> None:
    """Capture the fake's answer, then replay it (or its variants) to every request;
    answer ``served``."""
    response, key, cid = await capture()
    Replay.responses = variants(response, DISTINCT) if distinct else [response]
    server = await asyncio.get_running_loop().create_server(Replay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "key": key, "ids": [cid],
                      "response_bytes": len(response), "loop": loop_name}), flush=True)
    await _commands({"served": lambda: Replay.served})
    server.close()


def main() -> None:
    """Start the server named on the command line."""
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["fake", "replay"])
    p.add_argument("--characters", type=int, default=1)
    p.add_argument("--status", default="ready")
    p.add_argument("--log", action="store_true", help="keep the fake's request log")
    p.add_argument("--distinct", action="store_true",
                   help="replay: cycle through variants of the answer (see the docstring)")
    args = p.parse_args()
    if args.kind == "fake":
        asyncio.run(serve_fake(args.characters, args.status, args.log))
        return
    try:
        import uvloop
    except ImportError:
        loop, name = asyncio.new_event_loop(), "asyncio"
    else:
        loop, name = uvloop.new_event_loop(), "uvloop"
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve_replay(name, args.distinct))


if __name__ == "__main__":
    main()
