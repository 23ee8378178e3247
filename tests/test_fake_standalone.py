"""``python -m aurous_async.testing`` (and ``aurous-async fake-server``), run in-process
through ``serve(args)``: seeding, credits, faults, hints, and one-line usage errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import attrs
import pytest

import aurous_async as aa
from aurous_async.testing.__main__ import build_parser, serve

KEY = "al_live_" + "c" * 64


@attrs.define
class Running:
    out: list[str]
    err: str
    base_url: str


@attrs.define
class Output:
    capsys: pytest.CaptureFixture[str]
    out: str = ""
    err: str = ""

    def read(self) -> None:
        captured = self.capsys.readouterr()
        self.out += captured.out
        self.err += captured.err


@contextlib.asynccontextmanager
async def start(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Running]:
    """Run serve() until the test is done with it; yields what it printed."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(build_parser().parse_args(["--port", "0", *argv]), stop=stop))
    output = Output(capsys)
    for _ in range(1000):  # a bound on polls, not a measured time
        await asyncio.sleep(0.005)
        output.read()
        if "AUROUS_API_KEY=" in output.out or task.done():
            break
    assert not task.done(), output.err
    await asyncio.sleep(0)
    output.read()
    lines = output.out.splitlines()
    base_url = lines[1].removeprefix("AUROUS_BASE_URL=")
    try:
        yield Running(lines, output.err, base_url)
    finally:
        stop.set()
        assert await task == 0


async def run_to_exit(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # A bound, not a measurement: a server that starts despite a bad value fails here.
    code = await asyncio.wait_for(serve(build_parser().parse_args(list(argv))), 30)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def get(url: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url + path, headers={"X-Api-Key": KEY}) as r:
        return r.status, await r.json()


async def post(url: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(url + path, headers={"X-Api-Key": KEY}) as r:
        return r.status, await r.json()


async def test_seed_credits_faults_and_synthesis_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: --seed ids not printed after the env lines or unknown to the API, and
    --credits, --fault or --synthesis-seconds not reaching the server."""
    argv = ["--api-key", KEY, "--seed", "3", "--credits", "7", "--synthesis-seconds", "0",
            "--fault", "GET /v1/balance=json_503",
            "--fault", "GET /v1/characters/{character_id}=extra_fields"]
    async with start(argv, capsys) as running:
        assert running.out[0] == f"fake Aurous API on {running.base_url}"
        assert running.out[1:3] == [f"AUROUS_BASE_URL={running.base_url}", f"AUROUS_API_KEY={KEY}"]
        ids = running.out[3:]
        assert len(ids) == 3 and all(re.fullmatch(r"char_[0-9A-Z]{26}", i) for i in ids)
        for cid in ids:
            status, character = await get(running.base_url, f"/v1/characters/{cid}")
            assert status == 200 and "x_future_field" in character
        assert (await get(running.base_url, "/v1/balance"))[0] == 503
        status, character = await post(running.base_url, f"/v1/characters/{ids[0]}/resynthesize")
        # Zero API seconds of synthesis: done before the answer is written.
        assert (status, character["status"]) == (200, "reviewing")
        async with aiohttp.ClientSession() as http, \
                http.get(running.base_url + "/_fake/credits") as response:
            assert (await response.json())["credits"] == 3


async def test_seed_file_takes_the_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: --seed-file not written (or written after the server says it is ready)."""
    target = tmp_path / "ids.txt"
    async with start(["--api-key", KEY, "--seed", "2", "--seed-file", str(target)], capsys) as running:
        ids = target.read_text().splitlines()
        assert len(ids) == 2 and len(running.out) == 3
        for cid in ids:
            assert (await get(running.base_url, f"/v1/characters/{cid}"))[0] == 200


@pytest.mark.parametrize("spec", [
    "nonsense",
    "GET /v1/balance=explode",
    "GET /v1/balance=json_503:2",
    "GET /v1/balance=json_503:often",
    "GET /v1/nope=drop",
    "=drop",
])
async def test_a_bad_fault_is_one_line_and_exit_2(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: a bad --fault crashing with a traceback, or starting a server anyway."""
    code, out, err = await run_to_exit(["--port", "0", "--fault", spec], capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --fault {spec!r}: ")


@pytest.mark.parametrize("argv", [
    ["--time-scale", "0"], ["--time-scale", "nan"], ["--synthesis-seconds", "-1"],
    ["--seed", "-1"], ["--seed-file", "ids.txt"],
])
async def test_other_bad_values_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: impossible option values reaching the server as tracebacks."""
    code, out, err = await run_to_exit(["--port", "0", *argv], capsys)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


async def test_a_busy_port_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: a busy port ending in a traceback (issue 17)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await run_to_exit(["--port", str(port)], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


async def test_time_scale_prints_a_client_line_that_works(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: --time-scale printing no way (or a broken way) to give a client that scale."""
    async with start(["--api-key", KEY, "--time-scale", "60"], capsys) as running:
        line = re.search(r"aa\.AurousSession\(.*\)$", running.err, re.MULTILINE)
        assert line, running.err
        assert "clock=aa.ScaledClock(60.0)" in line.group(0)
        session = eval(line.group(0), {"aa": aa})  # the printed line, as a user pastes it
        async with session as s:
            assert s.clock.scale == 60.0
            assert (await s.balance()).credits == 1000


async def test_insecure_http_hint_only_for_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards: --host 0.0.0.0 printing a base URL the SDK refuses without saying how to opt in."""
    async with start(["--host", "0.0.0.0"], capsys) as running:
        assert "AUROUS_ALLOW_INSECURE_HTTP=1" in running.err
    async with start(["--host", "127.0.0.1"], capsys) as running:
        assert "AUROUS_ALLOW_INSECURE_HTTP" not in running.err
        assert "ScaledClock" not in running.err
