"""``aurous-async resynthesize`` in-process: which characters, how they are followed, and
the charge summary every run ends with — after success, errors, timeouts and Ctrl-C."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aurous_async.testing import FakeAurousServer, Fault, FaultKind

from .test_cli_support import (  # noqa: F401 - the fixtures are used by name
    RESYNTHESIZE,
    Cli,
    cli_fixture,
    ctrl_c,
    eventually,
    offline_fixture,
    polled,
    scaled_fixture,
    server_fixture,
    when,
)

SAVE = "POST /v1/characters/{character_id}/save"


def charged_on_server(server: FakeAurousServer, ids: list[str]) -> list[str]:
    """The ids the fake billed, in the order given."""
    return [cid for cid in ids if server.charges_for(cid)]


def sent(server: FakeAurousServer) -> list[str]:
    """The character ids of the resynthesize POSTs the fake received, in order."""
    return [r.path.split("/")[3] for r in server.requests_to(RESYNTHESIZE)]


def test_without_watch_each_answer_and_the_charges_are_printed(cli: Cli,
                                                               server: FakeAurousServer) -> None:
    """Guards: a run without --watch hiding its charges or its answers, or the JSON
    summary landing on stdout among the objects."""
    ids = [server.add_character(), server.add_character()]
    result = cli("resynthesize", *ids, "--json")
    assert result.code == 0, result.err
    assert [c["status"] for c in result.json_lines()] == ["synthesizing", "synthesizing"]
    summary = result.summary()
    assert summary["charged"] == ids == charged_on_server(server, ids)
    assert summary["synthesizing"] == ids
    assert summary["not_sent"] == summary["maybe_charged"] == summary["unsaved"] == []


def test_an_error_midway_shows_what_was_charged_and_what_was_not_sent(
        cli: Cli, server: FakeAurousServer) -> None:
    """Guards: `resynthesize A bad C` printing only the error (issue 17): A's charge and
    C never sent must both be shown, on stdout, after the one error line."""
    a, c = server.add_character(), server.add_character()
    result = cli("resynthesize", a, "char_bad", c)
    assert result.code == 3
    result.error_line(r"^error: NotFoundError: 404")
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == [a, "synthesizing"]
    assert f"charged (1): {a}" in lines
    assert any(line.startswith("not charged (1): char_bad") for line in lines)
    assert any(line.startswith(f"not sent (1): {c}") for line in lines)
    assert sent(server) == [a, "char_bad"]


def test_a_bad_id_midway_is_not_sent(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: an id refused by the SDK's argument check counted as sent."""
    a = server.add_character()
    result = cli("resynthesize", a, " char_padded ", "--json")
    assert result.code == 2
    summary = result.summary()
    assert (summary["charged"], summary["not_sent"]) == ([a], [" char_padded "])


def test_many_with_watch_and_auto_save(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: the fan-out not following each to ready, not sending force_all, or its
    summary disagreeing with the bill."""
    ids = [server.add_character() for _ in range(3)]
    result = cli("resynthesize", *ids, "--watch", "--auto-save", "--force-all", "--json")
    assert result.code == 0, result.err
    rows = result.json_lines()
    assert sorted(r["character_id"] for r in rows) == sorted(ids)
    assert all(r["ok"] and r["character"]["status"] == "ready" for r in rows)
    assert all(r.json() == {"force_all": True} for r in server.requests_to(RESYNTHESIZE))
    summary = result.summary()
    assert summary["charged"] == ids == charged_on_server(server, ids)
    assert summary["unsaved"] == summary["synthesizing"] == []


def test_auto_save_implies_watch(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: --auto-save without --watch silently leaving the character unsaved."""
    cid = server.add_character()
    result = cli("resynthesize", cid, "--auto-save")
    assert result.code == 0, result.err
    assert "reviewing -> ready" in result.out
    assert len(server.requests_to(SAVE)) == 1


def test_watch_without_save_reports_the_character_left_unsaved(
        cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a charged character ending in `reviewing` not named as left unsaved."""
    ids = [server.add_character(), server.add_character()]
    single = cli("resynthesize", ids[0], "--watch")
    assert single.code == 0, single.err
    assert "synthesizing -> reviewing" in single.out
    assert any(line.startswith(f"left unsaved (1): {ids[0]}") for line in single.out.splitlines())
    many = cli("resynthesize", *ids, "--watch", "--json")
    assert many.summary()["unsaved"] == ids


def test_timeout_exits_4_and_says_what_is_still_running(cli: Cli,
                                                        server: FakeAurousServer) -> None:
    """Guards: a watch timeout not exiting 4 in one error line, or its charge hidden."""
    server.synthesis_seconds = 10**6
    cid = server.add_character()
    # Longer than a typical synthesis: a shorter timeout sends nothing (not charged).
    result = cli("resynthesize", cid, "--watch", "--timeout", "120")
    assert result.code == 4, (result.out, result.err)
    result.error_line(r"WatchTimeoutError")
    assert any(line.startswith(f"still synthesizing (1): {cid}")
               for line in result.out.splitlines())


def test_failed_synthesis_exits_1(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a character ending `failed` not exiting 1; a batch after a one-shot
    failure not exiting 0."""
    cid = server.add_character()
    server.fail_next_synthesis(cid, "provider exploded")
    result = cli("resynthesize", cid, "--watch", "--json")
    assert result.code == 1
    assert result.json_lines()[-1]["status"] == "failed"
    assert result.summary()["charged"] == [cid]
    batch = cli("resynthesize", cid, server.add_character(), "--watch")
    assert batch.code == 0  # the retry succeeded: failures are one-shot in the fake


def test_a_failure_in_a_batch_exits_1_and_is_charged_not_running(
        cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a batch with a character ending `failed` not exiting 1, or the summary
    calling that character still synthesizing."""
    ids = [server.add_character(), server.add_character()]
    server.fail_next_synthesis(ids[0], "provider exploded")
    result = cli("resynthesize", *ids, "--watch", "--json")
    assert result.code == 1
    summary = result.summary()
    assert summary["charged"] == ids
    assert summary["synthesizing"] == [] and summary["unsaved"] == ids[1:]


def test_a_post_without_an_answer_may_have_been_charged(cli: Cli,
                                                        server: FakeAurousServer) -> None:
    """Guards: a POST the server processed but never answered (connection dropped on
    every attempt) reported as not charged."""
    cid = server.add_character()
    server.faults.add(Fault(FaultKind.DROP, route=RESYNTHESIZE))
    result = cli("resynthesize", cid, "--json")
    assert result.code == 3
    assert server.charges_for(cid)
    assert result.summary()["maybe_charged"] == [cid]


def test_out_of_credits_the_summary_matches_the_bill(cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a 402 mid-batch leaving an id out of the summary, or the summary calling
    charged what the server did not bill (credits for one resynthesize only)."""
    server.default_team.credits = 4
    ids = [server.add_character() for _ in range(4)]
    result = cli("resynthesize", *ids, "--watch", "--json")
    assert result.code == 3
    summary = result.summary()
    assert summary["charged"] == charged_on_server(server, ids) == ids[:1]
    fates = summary["charged"] + summary["not_charged"] + summary["not_sent"]
    assert sorted(fates) == sorted(ids) and summary["maybe_charged"] == []
    assert set(summary["not_sent"]).isdisjoint(sent(server))


def test_ids_file_adds_ids_skipping_blanks_and_comments(cli: Cli, server: FakeAurousServer,
                                                        tmp_path: Path) -> None:
    """Guards: --ids-file ignored, or its comments and blank lines sent as ids."""
    ids = [server.add_character() for _ in range(3)]
    path = tmp_path / "ids.txt"
    path.write_text(f"# heroes\n{ids[1]}\n\n  {ids[2]}  # the last one\n", encoding="utf-8")
    result = cli("resynthesize", ids[0], "--ids-file", str(path), "--json")
    assert result.code == 0, result.err
    assert sent(server) == ids
    assert result.summary()["charged"] == ids


def test_ids_file_dash_reads_stdin(cli: Cli, server: FakeAurousServer,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: `--ids-file -` not reading the ids piped in."""
    ids = [server.add_character() for _ in range(2)]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(ids) + "\n"))
    assert cli("resynthesize", "--ids-file", "-").code == 0
    assert sent(server) == ids


def test_bad_id_lists_are_usage_errors_before_any_charge(cli: Cli, server: FakeAurousServer,
                                                         tmp_path: Path) -> None:
    """Guards: a missing file, a repeated id or no id at all costing a request, a
    traceback, more than one line, or an exit code other than 2."""
    cid = server.add_character()
    cases = [
        (["--ids-file", str(tmp_path / "absent.txt")], r"^error: --ids-file .*absent\.txt"),
        ([cid, cid], rf"^error: {cid} is given twice"),
        ([], r"^error: no character ids"),
    ]
    for argv, pattern in cases:
        result = cli("resynthesize", *argv)
        assert (result.code, result.out) == (2, ""), argv
        result.error_line(pattern)
    assert server.requests_to(RESYNTHESIZE) == []


class PipeClosedAfter(io.StringIO):
    """A stdout whose reader leaves after ``lines`` lines (`| head -n LINES`)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_stdout_moves_the_summary_to_stderr(cli: Cli, server: FakeAurousServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: `resynthesize ... | head -1` losing the charge summary with the pipe,
    whether the pipe closes before the answers or just before the summary."""
    for lines in (0, 2):
        ids = [server.add_character(), server.add_character()]
        expected = ([f"charged (1): {ids[0]}", f"not sent (1): {ids[1]}"] if lines == 0
                    else [f"charged (2): {ids[0]} {ids[1]}"])
        monkeypatch.setattr("sys.stdout", PipeClosedAfter(lines))
        result = cli("resynthesize", *ids)
        assert result.code == 141, lines
        summary = [line.split("  [")[0] for line in result.err.splitlines()]
        assert summary[:len(expected)] == expected, result.err


def test_ctrl_c_while_watching_reports_the_charges_and_exits_130(
        cli: Cli, server: FakeAurousServer) -> None:
    """Guards: Ctrl-C during `--watch --auto-save` printing nothing though both
    characters were charged and neither saved (issue 17), or exiting other than 130."""
    server.synthesis_seconds = 10**6
    ids = [server.add_character(), server.add_character()]
    # Polled twice: the answer to each POST, and the first poll's, have been read.
    both_followed = lambda: all(polled(server, cid, times=2)() for cid in ids)  # noqa: E731
    with when(both_followed, ctrl_c):
        result = cli("resynthesize", *ids, "--watch", "--auto-save", "--json")
    assert result.code == 130
    assert result.err.splitlines()[0] == "interrupted"
    summary = result.summary()
    assert summary["charged"] == summary["synthesizing"] == ids
    assert summary["not_sent"] == summary["maybe_charged"] == []
    assert server.requests_to(SAVE) == []


def test_ctrl_c_during_a_post_says_it_may_have_been_charged(cli: Cli,
                                                            server: FakeAurousServer) -> None:
    """Guards: a POST still out at Ctrl-C reported as not charged (the server bills it
    after all), or the human summary missing from stdout."""
    cid = server.add_character()
    # Held 0.25 s: from its arrival, Ctrl-C and the command's return take 15-50 ms (70
    # ms at most with both cores busy elsewhere).
    server.faults.add(Fault(FaultKind.SLOW, route=RESYNTHESIZE, delay=0.25))
    with when(lambda: bool(server.requests_to(RESYNTHESIZE)), ctrl_c):
        result = cli("resynthesize", cid, "--watch")
    assert result.code == 130
    assert "charged (0):" in result.out.splitlines()
    assert any(line.startswith(f"maybe charged (1): {cid}") for line in result.out.splitlines())
    # The server goes on with the request the command left: it was charged after all
    # (and is over before the fake stops).
    eventually(lambda: bool(server.charges_for(cid)), "the held POST was charged")
