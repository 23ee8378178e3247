"""Running the command line in-process against the fake, for the ``test_cli*`` modules.

``aurous_async.cli.main`` runs its own event loop, so CLI tests are synchronous: the fake
serves from its own thread, and both run on one :class:`ScaledClock` (1000 API seconds a
second), so polls, backoff and syntheses take milliseconds. Things that must happen
while the command runs (a synthesis finishing, Ctrl-C) come from :func:`when`, which
acts on what the fake has seen, never on elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from aurous_async import ScaledClock
from aurous_async.cli import main
from aurous_async.testing import FakeAurousServer

RESYNTHESIZE = "POST /v1/characters/{character_id}/resynthesize"
GET_ONE = "GET /v1/characters/{character_id}"


@attrs.frozen
class Result:
    """What one run of the command line returned and printed."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[Any]:
        """stdout, one JSON object per line (fails on anything else)."""
        return [json.loads(line) for line in self.out.splitlines()]

    def error_line(self, pattern: str) -> str:
        """The single line on stderr, checked against ``pattern``."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        assert re.search(pattern, lines[0]), lines[0]
        return lines[0]

    def summary(self) -> dict[str, list[str]]:
        """The JSON charge summary: the last line of stderr (``--json`` mode)."""
        data: dict[str, list[str]] = json.loads(self.err.strip().splitlines()[-1])
        return data


class Cli:
    """Calls ``main(argv)`` with the fake's key and URL in the environment."""

    def __init__(self, capsys: pytest.CaptureFixture[str], clock: ScaledClock) -> None:
        self.capsys = capsys
        self.clock = clock

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = main(list(args), clock=self.clock)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)


@pytest.fixture(name="scaled")
def scaled_fixture() -> ScaledClock:
    """The clock the fake and the command share."""
    return ScaledClock(1000)


@pytest.fixture(name="server")
def server_fixture(scaled: ScaledClock) -> Iterator[FakeAurousServer]:
    """A fake in its own thread; a synthesis takes 45 API seconds (45 ms)."""
    with FakeAurousServer(clock=scaled, synthesis_seconds=45).run_in_thread() as fake:
        yield fake


@pytest.fixture(name="offline")
def offline_fixture(capsys: pytest.CaptureFixture[str], scaled: ScaledClock,
            monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command line with no AUROUS_* variables set."""
    for name in list(os.environ):
        if name.startswith("AUROUS_"):
            monkeypatch.delenv(name)
    return Cli(capsys, scaled)


@pytest.fixture(name="cli")
def cli_fixture(offline: Cli, server: FakeAurousServer, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command line pointed at ``server`` through AUROUS_API_KEY/AUROUS_BASE_URL."""
    monkeypatch.setenv("AUROUS_API_KEY", server.api_key)
    monkeypatch.setenv("AUROUS_BASE_URL", server.base_url)
    return offline


@contextlib.contextmanager
def when(condition: Callable[[], bool], action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` from a helper thread once ``condition`` holds, while the body runs
    (the command line, which blocks this thread). Gives up after 30 s unmet."""
    stop = threading.Event()

    def watch() -> None:
        for _ in range(6000):
            if stop.is_set():
                return
            if condition():
                action()
                return
            stop.wait(0.005)

    helper = threading.Thread(target=watch, daemon=True)
    helper.start()
    try:
        yield
    finally:
        stop.set()
        helper.join()


def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (30 s at most) for something the fake does in its own thread, such as
    finishing a request held by a ``SLOW`` fault after the command is gone."""
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def ctrl_c() -> None:
    """Press Ctrl-C: SIGINT to this process, as a terminal sends it."""
    os.kill(os.getpid(), signal.SIGINT)


def polled(fake: FakeAurousServer, character_id: str, times: int = 1) -> Callable[[], bool]:
    """Whether the command has polled ``character_id`` at least ``times`` times."""
    path = f"/v1/characters/{character_id}"
    return lambda: sum(r.path == path for r in fake.requests_to(GET_ONE)) >= times
