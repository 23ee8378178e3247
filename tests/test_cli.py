"""The command line, run as a subprocess against the fake server, as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aurous_async.testing import FakeAurousServer


@pytest.fixture
def server() -> Iterator[FakeAurousServer]:
    with FakeAurousServer(time_scale=1000, synthesis_seconds=45).run_in_thread() as fake:
        yield fake


def run(fake: FakeAurousServer | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUROUS_")}
    if fake is not None:
        env["AUROUS_API_KEY"] = fake.api_key
        env["AUROUS_BASE_URL"] = fake.base_url
    return subprocess.run([sys.executable, "-m", "aurous_async", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_one_error_line(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_get_json(server: FakeAurousServer) -> None:
    cid = server.add_character(name="Aurora")
    result = run(server, "get", cid, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["id"], data["name"], data["status"]) == (cid, "Aurora", "ready")


def test_get_table(server: FakeAurousServer) -> None:
    cid = server.add_character(name="Aurora")
    result = run(server, "get", cid)
    assert result.returncode == 0
    assert cid in result.stdout and "ready" in result.stdout


def test_api_error_is_one_line_with_code_and_request_id(server: FakeAurousServer) -> None:
    result = run(server, "get", "char_missing")
    assert result.returncode == 3
    assert_one_error_line(result, r"^error: NotFoundError: 404 resource_not_found: .*request_id: req_")
    assert server.api_key not in result.stderr


def test_list_follows_pages(server: FakeAurousServer) -> None:
    ids = {server.add_character(name=f"c{i}") for i in range(5)}
    result = run(server, "list", "--limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert {c["id"] for c in json.loads(result.stdout)} == ids
    assert len(server.requests_to("GET /v1/characters")) == 3


def test_usage_errors_exit_2(server: FakeAurousServer) -> None:
    result = run(server, "list", "--limit", "500")
    assert result.returncode == 2
    assert_one_error_line(result, r"limit must be between 1 and 100")
    assert run(server, "frobnicate").returncode == 2
    assert run(server, "get").returncode == 2
    missing_key = run(None, "get", "char_x")
    assert missing_key.returncode == 2
    assert_one_error_line(missing_key, r"ConfigurationError: no API key")


def test_save_of_a_synthesizing_character_is_an_api_error(server: FakeAurousServer) -> None:
    server.synthesis_seconds = 10**6
    cid = server.add_character(status="synthesizing")
    result = run(server, "save", cid)
    assert result.returncode == 3
    assert_one_error_line(result, r"400 invalid_request_error")


def test_watch_auto_save_json_lines(server: FakeAurousServer) -> None:
    server.synthesis_seconds = 3000  # 3 s of real time: longer than the CLI takes to start
    cid = server.add_character(status="synthesizing")
    result = run(server, "watch", cid, "--auto-save", "--json")
    assert result.returncode == 0, result.stderr
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    assert [u["status"] for u in updates] == ["synthesizing", "reviewing", "ready"]
    assert updates[-1]["terminal"] is True


def test_resynthesize_many_with_watch(server: FakeAurousServer) -> None:
    ids = [server.add_character() for _ in range(3)]
    result = run(server, "resynthesize", *ids, "--watch", "--auto-save", "--force-all", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["character_id"] for r in rows) == sorted(ids)
    assert all(r["ok"] and r["character"]["status"] == "ready" for r in rows)
    assert all(r.json() == {"force_all": True}
               for r in server.requests_to("POST /v1/characters/{character_id}/resynthesize"))


def test_resynthesize_without_watch_returns_at_once(server: FakeAurousServer) -> None:
    cid = server.add_character()
    result = run(server, "resynthesize", cid, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["status"] == "synthesizing"


def test_single_resynthesize_watch_human_output(server: FakeAurousServer) -> None:
    cid = server.add_character()
    result = run(server, "resynthesize", cid, "--watch", "--auto-save")
    assert result.returncode == 0, result.stderr
    assert "reviewing -> ready" in result.stdout


def test_timeout_exits_4(server: FakeAurousServer) -> None:
    server.synthesis_seconds = 10**6
    cid = server.add_character()
    result = run(server, "resynthesize", cid, "--watch", "--timeout", "1")
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert_one_error_line(result, r"WatchTimeoutError")


def test_failed_synthesis_exits_1(server: FakeAurousServer) -> None:
    cid = server.add_character()
    server.fail_next_synthesis(cid, "provider exploded")
    result = run(server, "resynthesize", cid, "--watch", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "failed"
    batch = run(server, "resynthesize", cid, server.add_character(), "--watch")
    assert batch.returncode == 0  # the retry succeeded: failures are one-shot in the fake


def test_demo_default_finishes_fast_with_no_429() -> None:
    started = time.monotonic()
    result = run(None, "demo", "--no-live", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert re.search(r"429s from the server\s+0\b", result.stdout)
    assert re.search(r"characters done / failed\s+30 / 0", result.stdout)
    assert elapsed < 60


def test_fake_server_command() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "aurous_async", "fake-server", "--port", "0",
                             "--api-key", "al_live_" + "e" * 64], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert url
        env = {**os.environ, "AUROUS_API_KEY": "al_live_" + "e" * 64, "AUROUS_BASE_URL": url.group(0)}
        listed = subprocess.run([sys.executable, "-m", "aurous_async", "list", "--json"],
                                capture_output=True, text=True, env=env, timeout=30)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_console_script_is_installed() -> None:
    # Next to this interpreter: a PATH of version-manager shims may not know it yet.
    script = Path(sysconfig.get_path("scripts")) / "aurous-async"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("aurous-async ")
