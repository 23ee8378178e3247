"""The command line, in-process against the fake: reading commands, output that pipes,
one-line errors, logging, the demo; and two subprocesses for the entry points."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

from aurous_async.cli._main import build_parser
from aurous_async.testing import FakeAurousServer, Fault, FaultKind

from .test_cli_support import (  # noqa: F401 - the fixtures are used by name
    GET_ONE,
    Cli,
    cli_fixture,
    ctrl_c,
    offline_fixture,
    polled,
    scaled_fixture,
    server_fixture,
    when,
)


def test_get_json(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: `get --json` printing something other than the character as API JSON."""
    cid = server.add_character(name="Aurora")
    result = cli("get", cid, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["id"], data["name"], data["status"]) == (cid, "Aurora", "ready")
    api = server.character(cid)
    assert (data["created_at"], data["updated_at"]) == (api["created_at"], api["updated_at"])
    assert [r["pose"] for r in data["refs"]] == [r["pose"] for r in api["refs"]]


def test_get_prints_one_plain_row(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: `get` without --json losing the id or the status from its line."""
    cid = server.add_character(name="Aurora")
    result = cli("get", cid)
    assert result.code == 0, result.err
    assert result.out.split()[:2] == [cid, "ready"]


def test_api_error_is_one_line_with_code_and_request_id(cli: Cli,
                                                        server: FakeAurousServer) -> None:
    """Guards: an API error printed as a traceback, without its code or request id, with
    the wrong exit code, or with the key in it."""
    result = cli("get", "char_missing")
    assert result.code == 3
    result.error_line(r"^error: NotFoundError: 404 resource_not_found: .*request_id: req_")
    assert server.api_key not in result.err


def test_page_size_is_what_each_request_asks_for(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: --page-size not reaching the API as `limit`, or pages not followed."""
    ids = {server.add_character(name=f"c{i}") for i in range(5)}
    result = cli("list", "--page-size", "2", "--json")
    assert result.code == 0, result.err
    assert {c["id"] for c in result.json_lines()} == ids
    pages = server.requests_to("GET /v1/characters")
    assert [r.query.get("limit") for r in pages] == ["2", "2", "2"]


def test_limit_is_the_number_of_characters_printed(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: --limit taken as the page size (the whole list printed), or the command
    fetching a page it will not print."""
    for i in range(5):
        server.add_character(name=f"c{i}")
    result = cli("list", "--limit", "3", "--page-size", "3")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 3
    assert len(server.requests_to("GET /v1/characters")) == 1
    assert len(cli("list", "--limit", "4", "--json").json_lines()) == 4


def test_list_json_is_one_object_per_line(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: `list --json` printing one array instead of one object per line."""
    ids = [server.add_character(name=f"c{i}") for i in range(3)]
    result = cli("list", "--json")
    lines = result.out.splitlines()
    assert len(lines) == 3
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(ids)


def test_plain_columns_are_not_truncated_when_piped(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a table cut or wrapped to a terminal width when stdout is a pipe."""
    name = "Aurora of the Very Long Name " * 8
    cid = server.add_character(name=name.strip())
    result = cli("list")
    assert result.code == 0, result.err
    (line,) = result.out.splitlines()
    fields = line.split()
    assert fields[:2] == [cid, "ready"]
    assert fields[3] == "portrait,front,side,back"
    assert line.endswith(name.strip())


def test_usage_errors_are_one_line_and_exit_2(cli: Cli) -> None:
    """Guards: a usage mistake answered with a traceback, a usage block, or an exit code
    other than 2 — in the parser, in the demo's options, or in the SDK's checks."""
    cases = [
        (["list", "--page-size", "500"], r"--page-size: must be between 1 and 100"),
        (["list", "--limit", "0"], r"--limit: must be at least 1"),
        (["frobnicate"], r"invalid choice: 'frobnicate'"),
        (["get"], r"the following arguments are required: id"),
        (["demo", "--characters", "0"], r"--characters: must be at least 1"),
        (["demo", "--time-scale", "-1"], r"--time-scale: must be a positive number"),
        (["get", " char_padded "], r"^error: ValueError: character_id is not a valid id"),
    ]
    for argv, pattern in cases:
        result = cli(*argv)
        assert result.code == 2, argv
        result.error_line(pattern)


def test_missing_key_names_the_flag_and_the_variable(offline: Cli) -> None:
    """Guards: the missing-key error speaking Python (`api_key=`) to a shell user."""
    result = offline("get", "char_x")
    assert result.code == 2
    line = result.error_line(r"--api-key")
    assert "AUROUS_API_KEY" in line and "api_key=" not in line


def test_bad_base_url_says_where_it_came_from(offline: Cli) -> None:
    """Guards: a rejected base URL not pointing at --base-url / AUROUS_BASE_URL."""
    result = offline("get", "char_x", "--api-key", "al_live_" + "a" * 64,
                     "--base-url", "http://api.example.com")
    assert result.code == 2
    result.error_line(r"base_url uses http://.*\(from --base-url or AUROUS_BASE_URL\)")


def test_save_of_a_synthesizing_character_is_an_api_error(cli: Cli,
                                                          server: FakeAurousServer) -> None:
    """Guards: a 400 from save not ending in one line and exit 3."""
    server.synthesis_seconds = 10**6
    cid = server.add_character(status="synthesizing")
    result = cli("save", cid)
    assert result.code == 3
    result.error_line(r"400 invalid_request_error")


def test_watch_auto_save_json_lines(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: watch --auto-save missing a step, not saving, or not marking the end."""
    server.synthesis_seconds = 10**6
    cid = server.add_character(status="synthesizing")
    with when(polled(server, cid), lambda: server.finish_synthesis(cid)):
        result = cli("watch", cid, "--auto-save", "--json")
    assert result.code == 0, result.err
    updates = result.json_lines()
    assert [u["status"] for u in updates] == ["synthesizing", "reviewing", "ready"]
    assert updates[-1]["terminal"] is True
    assert len(server.requests_to("POST /v1/characters/{character_id}/save")) == 1


def test_retry_lines_show_only_with_verbose(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: the SDK's retry warnings reaching the shell without -v, hidden with it, or
    printed twice when the program calling main() has a root log handler of its own."""
    cid = server.add_character()
    server.faults.add(Fault(FaultKind.JSON_503, route=GET_ONE, nth=1))
    quiet = cli("get", cid)
    assert (quiet.code, quiet.err) == (0, "")
    server.faults.add(Fault(FaultKind.JSON_503, route=GET_ONE, nth=1))
    root_handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(root_handler)
    try:
        loud = cli("get", cid, "-v")
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert loud.code == 0
    assert re.fullmatch(r"aurous-async: WARNING: GET /v1/characters/\S+: .*retrying.*\n",
                        loud.err), loud.err


def test_unreachable_server_is_one_line_without_verbose(offline: Cli) -> None:
    """Guards: retry lines printed before the error of an unreachable server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    result = offline("get", "char_x", "--api-key", "al_live_" + "a" * 64,
                     "--base-url", f"http://127.0.0.1:{port}")
    assert result.code == 3
    result.error_line(r"^error: APIConnectionError")


def test_help_and_version_return_instead_of_exiting(offline: Cli) -> None:
    """Guards: main() raising SystemExit (or a wrong code) for --version and --help."""
    version = offline("--version")
    assert version.code == 0 and version.out.startswith("aurous-async ")
    assert offline("resynthesize", "--help").code == 0


def test_demo_defaults() -> None:
    """Guards: the demo's documented defaults (30 characters at x20) drifting."""
    args = build_parser().parse_args(["demo"])
    assert (args.characters, args.time_scale, args.no_live) == (30, 20.0, False)


def test_demo_finishes_past_the_burst_with_no_429(offline: Cli) -> None:
    """Guards: the demo's fan-out tripping the server's rate limit, leaving characters
    unfinished, or losing its summary (15 characters: 3 past the burst of 12). At x300
    (both sides on the demo's one clock) it takes about 0.3 s."""
    result = offline("demo", "--no-live", "--characters", "15", "--time-scale", "300")
    assert result.code == 0, result.err
    assert re.search(r"characters done / failed\s+15 / 0", result.out)
    assert re.search(r"429s from the server\s+0\b", result.out)
    assert re.search(r"credits charged\s+60\b", result.out)
    gets = re.search(r"GETs per character\s+(\d+\.\d+)", result.out)
    assert gets and float(gets.group(1)) >= 1


def test_ctrl_c_in_the_demo_exits_130_without_a_traceback(offline: Cli) -> None:
    """Guards: Ctrl-C during the demo ending in a KeyboardInterrupt traceback."""
    def fanning_out() -> bool:
        return "Resynthesizing all" in sys.stdout.getvalue()  # type: ignore[union-attr]

    with when(fanning_out, ctrl_c):
        result = offline("demo", "--no-live", "--characters", "15", "--time-scale", "60")
    assert (result.code, result.err) == (130, "interrupted\n")


def test_python_m_runs_the_fake_server_for_other_processes(offline: Cli,
                                                           tmp_path: Path) -> None:
    """Guards: `python -m aurous_async fake-server` not starting, not printing where it
    listens, not passing --seed/--seed-file/--api-key through, or not serving a CLI in
    another process (the README's recipe)."""
    key, seed_file = "al_live_" + "e" * 64, tmp_path / "ids.txt"
    proc = subprocess.Popen([sys.executable, "-m", "aurous_async", "fake-server", "--port", "0",
                             "--api-key", key, "--seed", "3", "--seed-file", str(seed_file),
                             "--time-scale", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert url
        env = ["--api-key", key, "--base-url", url.group(0)]
        listed = offline("list", "--json", *env)
        assert listed.code == 0, listed.err
        ids = seed_file.read_text().split()
        assert sorted(c["id"] for c in listed.json_lines()) == sorted(ids) and len(ids) == 3
        charged = offline("resynthesize", "--ids-file", str(seed_file), "--json", *env)
        assert charged.summary()["charged"] == ids
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fake_server_on_a_busy_port_is_one_line_and_exit_2(offline: Cli) -> None:
    """Guards: `fake-server` on a port in use crashing with a traceback and exit 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = offline("fake-server", "--port", str(busy.getsockname()[1]))
    assert result.code == 2
    result.error_line(r"^error: cannot listen on 127\.0\.0\.1:\d+")


def test_ctrl_c_stops_the_fake_server_with_exit_0(offline: Cli) -> None:
    """Guards: stopping `fake-server` the way it is meant to be stopped (Ctrl-C) ending
    in a traceback or a failure status."""
    def listening() -> bool:
        return "AUROUS_API_KEY=" in sys.stdout.getvalue()  # type: ignore[union-attr]

    with when(listening, ctrl_c):
        result = offline("fake-server", "--port", "0")
    assert result.code == 0
    assert "Traceback" not in result.err


def test_console_script_into_a_closed_pipe_exits_141_quietly(server: FakeAurousServer) -> None:
    """Guards: the installed `aurous-async` script missing, or a reader that leaves early
    (`aurous-async list | head -1`) ending in a BrokenPipeError traceback or "Exception
    ignored" message instead of exit 141 — whether the pipe closes mid-listing or
    before the last buffered line is flushed — or hiding a charge with the pipe."""
    cid = server.add_character()
    for i in range(1500):  # ~150 kB of rows: far more than one pipe and buffer hold
        server.add_character(name=f"c{i}")
    # Next to this interpreter: a PATH of version-manager shims may not know it yet.
    script = str(Path(sysconfig.get_path("scripts")) / "aurous-async")
    # Block-buffered stdout, as a user's shell gives it (CI may set PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(AUROUS_API_KEY=server.api_key, AUROUS_BASE_URL=server.base_url)
    for argv, lines, expected_err in ((["list"], 1, []), (["list", "--limit", "1"], 0, []),
                                      (["resynthesize", cid], 0, [f"charged (1): {cid}"])):
        proc = subprocess.Popen([script, *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        first = [proc.stdout.readline().decode() for _ in range(lines)]
        proc.stdout.close()  # `head` has what it wanted
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=30) == 141, (argv, err)
        assert err.splitlines()[:1] == expected_err, (argv, err)
        assert all(line.startswith("char_") for line in first), argv
