"""``aurous-async resynthesize --journal`` and ``aurous-async batch show``, in-process
against the fake: Ctrl-C and the command that resumes, a re-run charging no character
twice, the charge summary of a resumed run, a lease left by a dead runner waited out, a
live runner reported, and what ``batch show`` prints."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aurous_async import JournalError, ScaledClock, SQLiteJournal
from aurous_async.testing import FakeAurousServer, Fault, FaultKind

from .test_cli_support import (  # noqa: F401 - the fixtures are used by name
    RESYNTHESIZE,
    Cli,
    Result,
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
_T = TypeVar("_T")


def journal_states(path: Path, batch: str) -> dict[str, str]:
    """The state of each id of ``batch``, read through the public API as another
    process would (``{}`` while there is no journal yet)."""

    async def read() -> dict[str, str]:
        async with SQLiteJournal(path) as journal:
            return {r.character_id: r.state.value for r in await journal.read_batch(batch)}

    try:
        return asyncio.run(read())
    except JournalError:
        return {}


def resume_argv(result: Result) -> list[str]:
    """The arguments of the ``resume with:`` command a run printed on stderr."""
    lines = [line for line in result.err.splitlines() if line.startswith("resume with: ")]
    assert len(lines) == 1, result.err
    argv = shlex.split(lines[0].removeprefix("resume with: "))
    assert argv[0] == "aurous-async"
    return argv[1:]


def posts(server: FakeAurousServer, character_id: str) -> int:
    """How many resynthesize POSTs of ``character_id`` the fake received."""
    return sum(r.path.split("/")[3] == character_id for r in server.requests_to(RESYNTHESIZE))


class Interrupted:
    """A four-id batch stopped by Ctrl-C with its ids in every unfinished state:
    ``done`` (finished and saved), ``sent`` twice (charged, being followed) and
    ``sending`` (its POST written ahead and held by the server until the command is gone;
    then released, it is charged). The hold is released by the test, not timed: with a
    fixed 0.4 s, a slow moment of the machine let the held POST be answered before the
    other three were followed, and the scenario never arose (a run in about fifty)."""

    def __init__(self, cli: Cli, server: FakeAurousServer, folder: Path, *,
                 json: bool = True) -> None:
        server.synthesis_seconds = 10**6  # nothing finishes unless the test says so
        self.ids = [server.add_character() for _ in range(4)]
        ids_file = folder / "spring.txt"
        ids_file.write_text("\n".join(self.ids) + "\n", encoding="utf-8")
        self.journal = folder / "my journal.db"  # a space: the resume line must quote it
        # The fourth POST to arrive is held (which id that is depends on the wire); 30 s
        # only bounds a test gone wrong.
        hold = server.faults.add(Fault(FaultKind.SLOW, route=RESYNTHESIZE, nth=4, delay=30))
        finished: list[str] = []

        def three_followed() -> bool:
            return sum(polled(server, cid)() for cid in self.ids) == 3

        def finish_one() -> None:
            finished.append(next(cid for cid in self.ids if polled(server, cid)()))
            server.finish_synthesis(finished[0])

        def all_states_reached() -> bool:
            states = journal_states(self.journal, "spring")
            return sorted(states.values()) == ["done", "sending", "sent", "sent"]

        argv = ["resynthesize", "--ids-file", str(ids_file), "--journal", str(self.journal),
                "--auto-save", *(["--json"] if json else [])]
        with when(three_followed, finish_one), when(all_states_reached, ctrl_c):
            self.result = cli(*argv)
        hold.release()  # the command is gone: the server processes the held POST now
        states = journal_states(self.journal, "spring")
        assert finished, f"the command ended before three ids were followed: {self.result}"
        self.done = finished[0]
        assert states[self.done] == "done"
        self.sent = [cid for cid in self.ids if states[cid] == "sent"]
        self.sending = next(cid for cid in self.ids if states[cid] == "sending")


@pytest.fixture(name="interrupted")
def interrupted_fixture(cli: Cli, server: FakeAurousServer,
                        tmp_path: Path) -> Iterator[Interrupted]:
    """The interrupted batch, run with ``--json``; its held POST is over before the fake
    stops (a request still held then is a task left pending)."""
    interrupted = Interrupted(cli, server, tmp_path)
    yield interrupted
    eventually(lambda: bool(server.charges_for(interrupted.sending)), "the held POST")


def test_ctrl_c_exits_130_and_prints_the_command_that_resumes(interrupted: Interrupted) -> None:
    """Guards: Ctrl-C in a journaled run not exiting 130, printing no resume command or
    one the shell splits wrongly (a journal path with a space), or the summary calling
    the held POST anything but maybe charged."""
    result = interrupted.result
    assert result.code == 130, result.err
    assert result.err.splitlines()[0] == "interrupted"
    assert resume_argv(result) == [
        "resynthesize", "--journal", str(interrupted.journal), "--batch", "spring",
        "--auto-save", "--json"]
    summary = result.summary()
    assert summary["charged"] == sorted([interrupted.done, *interrupted.sent],
                                        key=interrupted.ids.index)
    assert summary["maybe_charged"] == [interrupted.sending]
    assert summary["charged_earlier"] == summary["from_journal"] == []


def test_ctrl_c_prints_the_resume_command_even_with_nothing_left_to_send(
        cli: Cli, server: FakeAurousServer, tmp_path: Path) -> None:
    """Guards: the resume command printed only when ids are left unsent, though an
    interrupted batch always has ids to finish (here one charged and being followed)."""
    server.synthesis_seconds = 10**6
    cid = server.add_character()
    with when(polled(server, cid), ctrl_c):
        result = cli("resynthesize", cid, "--journal", str(tmp_path / "j.db"), "--batch",
                     "b", "--timeout", "3600", "--force-all", "--json")
    assert result.code == 130
    summary = result.summary()
    assert (summary["charged"], summary["not_sent"], summary["maybe_charged"]) == (
        [cid], [], [])
    assert resume_argv(result) == ["resynthesize", "--journal", str(tmp_path / "j.db"),
                                   "--batch", "b", "--force-all", "--timeout", "3600",
                                   "--json"]


def test_the_resume_command_charges_every_id_exactly_once(
        interrupted: Interrupted, cli: Cli, server: FakeAurousServer) -> None:
    """Guards: a resumed batch POSTing again an id an earlier run charged or finished,
    charging the held one twice, or its summary counting an earlier run's charges as
    its own; and a third run sending anything at all."""
    ids, done, sent, held = (interrupted.ids, interrupted.done, interrupted.sent,
                             interrupted.sending)
    eventually(lambda: bool(server.charges_for(held)), "the held POST was processed")
    for cid in (*sent, held):
        server.finish_synthesis(cid)  # their syntheses were started to last forever
    argv = resume_argv(interrupted.result)

    resumed = cli(*argv)
    assert resumed.code == 0, resumed.err
    assert [len(server.charges_for(cid)) for cid in ids] == [1, 1, 1, 1]
    assert {cid: posts(server, cid) for cid in ids} == {done: 1, **{c: 1 for c in sent},
                                                        held: 2}
    replay = server.requests_to(RESYNTHESIZE)[-1]
    assert replay.replayed and replay.path.split("/")[3] == held
    rows = {row["character_id"]: row for row in resumed.json_lines()}
    assert {cid: row["from_journal"] for cid, row in rows.items()} == {
        cid: cid == done for cid in ids}
    assert all(row["ok"] and row["character"]["status"] == "ready" for row in rows.values())
    summary = resumed.summary()
    assert summary["charged"] == [held]
    assert summary["charged_earlier"] == sent
    assert summary["from_journal"] == [done]
    assert summary["not_sent"] == summary["maybe_charged"] == summary["unsaved"] == []
    assert "resume with:" not in resumed.err

    requests = len(server.requests)
    again = cli(*argv)
    assert again.code == 0, again.err
    assert len(server.requests) == requests
    assert again.summary()["from_journal"] == ids
    assert again.summary()["charged"] == []


def test_plain_output_shows_the_earlier_runs_apart(cli: Cli, server: FakeAurousServer,
                                                   tmp_path: Path) -> None:
    """Guards: without --json, the resume command missing from stderr, the held POST's
    hint telling to check it by hand, or the resumed run's lines not naming what
    earlier runs charged and finished."""
    interrupted = Interrupted(cli, server, tmp_path, json=False)
    first = interrupted.result
    assert first.code == 130
    command = shlex.join(["aurous-async", *resume_argv(first)])
    assert first.err.splitlines() == ["interrupted", f"resume with: {command}"]
    assert any(line.startswith(f"maybe charged (1): {interrupted.sending}  [")
               and "same Idempotency-Key" in line for line in first.out.splitlines())
    eventually(lambda: bool(server.charges_for(interrupted.sending)), "the held POST")
    for cid in (*interrupted.sent, interrupted.sending):
        server.finish_synthesis(cid)

    resumed = cli(*resume_argv(first))
    assert resumed.code == 0, resumed.err
    lines = resumed.out.splitlines()
    assert f"{interrupted.done}  ready  (from the journal)" in lines
    assert f"charged (1): {interrupted.sending}" in lines
    assert any(line.startswith(f"charged earlier (2): {' '.join(interrupted.sent)}  [")
               and "not charged again" in line for line in lines)
    assert any(line.startswith(f"from the journal (1): {interrupted.done}  [")
               for line in lines)


def test_batch_show_counts_states_and_says_what_was_charged(
        interrupted: Interrupted, cli: Cli) -> None:
    """Guards: `batch show` miscounting a state, calling a held POST charged or not
    charged instead of maybe, losing a row, or printing the signed character JSON."""
    plain = cli("batch", "show", str(interrupted.journal))
    assert plain.code == 0, plain.err
    lines = plain.out.splitlines()
    assert lines[0] == (f"batch spring in {interrupted.journal}: 4 ids: pending 0, "
                        "sending 1, sent 2, done 1, failed 0")
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == interrupted.ids
    assert rows[interrupted.done][1:] == ["done", "ready", "yes"]
    assert all(rows[cid][1:] == ["sent", "synthesizing", "yes"] for cid in interrupted.sent)
    assert rows[interrupted.sending][1:] == ["sending", "-", "maybe"]

    data = cli("batch", "show", str(interrupted.journal), "--batch", "spring", "--json")
    assert data.code == 0, data.err
    *records, summary = data.json_lines()
    assert summary == {"batch": "spring", "journal": str(interrupted.journal), "total": 4,
                       "counts": {"pending": 0, "sending": 1, "sent": 2, "done": 1,
                                  "failed": 0}}
    by_id = {r["character_id"]: r for r in records}
    assert [r["character_id"] for r in records] == interrupted.ids
    assert (by_id[interrupted.sending]["state"], by_id[interrupted.sending]["charged"]) == (
        "sending", "maybe")
    assert by_id[interrupted.sending]["idempotency_key"]
    assert "token=" not in data.out


def test_batch_show_gives_each_failure_its_class_code_and_charge(
        cli: Cli, server: FakeAurousServer, tmp_path: Path) -> None:
    """Guards: a failed synthesis shown as not charged, a 404 as charged, their error
    class or code lost; and a re-run of finished failures not exiting as the first run
    did (1 for a failed synthesis, 3 for an API error)."""
    ok, bad = server.add_character(), server.add_character()
    server.fail_next_synthesis(bad, "provider exploded")
    journal = str(tmp_path / "j.db")
    run = cli("resynthesize", ok, bad, "char_missing", "--journal", journal, "--batch", "b1")
    assert run.code == 3, run.err

    data = cli("batch", "show", journal, "--json")
    assert data.code == 0, data.err
    rows = {r["character_id"]: r for r in data.json_lines()[:-1]}
    assert (rows[ok]["state"], rows[ok]["status"], rows[ok]["charged"]) == (
        "done", "reviewing", "yes")
    assert (rows[bad]["state"], rows[bad]["charged"], rows[bad]["error_class"]) == (
        "failed", "yes", "SynthesisFailedError")
    missing = rows["char_missing"]
    assert (missing["state"], missing["charged"], missing["error_class"],
            missing["error_code"]) == ("failed", "no", "NotFoundError", "resource_not_found")
    plain = cli("batch", "show", journal)
    row = next(line for line in plain.out.splitlines() if line.startswith("char_missing "))
    assert row.split()[1:4] == ["failed", "-", "no"]
    assert "NotFoundError: 404 resource_not_found" in row

    requests = len(server.requests)
    assert cli("resynthesize", "--journal", journal, "--batch", "b1").code == 3
    assert cli("resynthesize", bad, "--journal", journal, "--batch", "b1").code == 1
    assert len(server.requests) == requests


def make_batches(path: Path, *names: str) -> None:
    """A journal holding ``names``, each with one id, written as a runner would."""

    async def write() -> None:
        async with SQLiteJournal(path) as journal:
            for name in names:
                async with await journal.open_batch(name, ["char_x"]):
                    pass

    asyncio.run(write())


def test_batch_show_without_batch_needs_a_single_batch(offline: Cli, tmp_path: Path) -> None:
    """Guards: `batch show PATH` of a journal with several batches picking one at random
    or not listing them, or exiting other than 2."""
    path = tmp_path / "j.db"
    make_batches(path, "winter", "autumn")
    result = offline("batch", "show", str(path))
    assert (result.code, result.out.splitlines()) == (2, ["autumn", "winter"])
    result.error_line(r"^error: .* holds 2 batches: pick one with --batch NAME$")
    as_json = offline("batch", "show", str(path), "--json")
    assert as_json.code == 2
    assert as_json.json_lines() == [{"batch": "autumn"}, {"batch": "winter"}]

    single = tmp_path / "single.db"
    make_batches(single, "only")
    result = offline("batch", "show", str(single))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].startswith("batch only in ")


def test_batch_show_of_a_bad_journal_is_one_line_and_exit_2(offline: Cli,
                                                           tmp_path: Path) -> None:
    """Guards: a missing or corrupt journal, or an unknown batch, ending in a traceback,
    an exit code other than 2, more than one line — or the missing file being created."""
    missing = tmp_path / "missing.db"
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all, " * 100)
    known = tmp_path / "known.db"
    make_batches(known, "spring")
    cases = [
        ([str(missing)], r"^error: JournalError: there is no journal at "),
        ([str(corrupt)], r"^error: JournalError: .*corrupt\.db cannot be used"),
        ([str(known), "--batch", "autumn"], r"^error: no batch 'autumn' in .* \(its batches: "
                                            r"spring\)$"),
    ]
    for argv, pattern in cases:
        result = offline("batch", "show", *argv)
        assert (result.code, result.out) == (2, ""), argv
        result.error_line(pattern)
    assert not missing.exists()


def test_journal_usage_errors_exit_2_before_any_request(cli: Cli, server: FakeAurousServer,
                                                        tmp_path: Path) -> None:
    """Guards: a journaled run with no batch name, --batch without --journal, a file
    stem that is no batch name, an unknown batch to resume or an unusable journal path
    sending a request, printing a traceback or a resume command that would fail the
    same way, or exiting other than 2."""
    cid = server.add_character()
    journal = str(tmp_path / "j.db")
    spaced = tmp_path / "my ids.txt"
    spaced.write_text(cid + "\n", encoding="utf-8")
    cases = [
        ([cid, "--journal", journal], r"^error: --journal needs --batch NAME"),
        ([cid, "--batch", "b"], r"^error: --batch names a run recorded in a journal"),
        (["--ids-file", str(spaced), "--journal", journal],
         r"^error: the batch name \(the stem of --ids-file .*\) 'my ids' is not a batch name"),
        (["--journal", journal, "--batch", "nope"], r"^error: no batch 'nope' in .*j\.db"),
        ([cid, "--journal", str(tmp_path / "no" / "j.db"), "--batch", "b"],
         r"^error: JournalError: the journal .* cannot be used"),
    ]
    for argv, pattern in cases:
        result = cli("resynthesize", *argv)
        assert result.code == 2, (argv, result.err)
        assert "Traceback" not in result.err and "resume with:" not in result.err
        assert re.search(pattern, result.err.splitlines()[0]), (argv, result.err)
    assert server.requests_to(RESYNTHESIZE) == []


class NeverRenews:
    """The test's scaled clock, except that sleeping never ends: a runner on it never
    renews its lease, as one that died would not."""

    def __init__(self, clock: ScaledClock) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def time(self) -> float:
        return self._clock.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return self._clock.call_later(delay, callback)


@contextlib.contextmanager
def runner_holding(path: Path, batch: str, ids: list[str], clock: Any,
                   lease_ttl: float) -> Iterator[None]:
    """Another runner holding ``batch`` (with its lease renewal on ``clock``) from an
    event loop of its own, as another process would."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    journal = SQLiteJournal(path, lease_ttl=lease_ttl, clock=clock)
    try:
        call(journal.open_batch(batch, ids))
        yield
    finally:
        call(journal.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_a_lease_left_by_a_dead_runner_is_waited_out(cli: Cli, server: FakeAurousServer,
                                                     scaled: ScaledClock,
                                                     tmp_path: Path) -> None:
    """Guards: the command failing at once on a batch whose runner died (BatchInUseError)
    instead of waiting for the lease to lapse and taking the batch over, not saying once
    that it waits and how long, or charging twice."""
    cid = server.add_character()
    journal = tmp_path / "j.db"
    # A 100 s lease: 0.1 real s to wait out.
    with runner_holding(journal, "b", [cid], NeverRenews(scaled), lease_ttl=100):
        result = cli("resynthesize", cid, "--journal", str(journal), "--batch", "b",
                     "--json")
    assert result.code == 0, result.err
    waits = [line for line in result.err.splitlines() if "held by another runner" in line]
    assert len(waits) == 1, result.err
    assert re.fullmatch(r"batch 'b' is held by another runner: waiting \d+s for its lease "
                        r"to lapse \(a runner that died stops renewing it\), \d+s at most",
                        waits[0])
    assert len(server.charges_for(cid)) == 1
    assert result.summary()["charged"] == [cid]


def test_a_live_runner_is_reported_after_twice_its_lease(cli: Cli, server: FakeAurousServer,
                                                         scaled: ScaledClock,
                                                         tmp_path: Path) -> None:
    """Guards: a second run of a batch whose runner is alive (renewing its lease)
    waiting forever, taking the batch over, sending anything, or not ending with exit 2
    and one error line saying so."""
    cid = server.add_character()
    journal = tmp_path / "j.db"
    # A 150 s lease, renewed every 50 s (50 real ms): lost only to a 100 ms stall.
    with runner_holding(journal, "b", [cid], scaled, lease_ttl=150):
        result = cli("resynthesize", cid, "--journal", str(journal), "--batch", "b")
    assert result.code == 2, result.err
    lines = result.err.splitlines()
    assert sum("held by another runner: waiting" in line for line in lines) == 1
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.err
    assert re.match(r"error: batch 'b' is still held after (\d+)s: another runner is "
                    r"working on it", errors[0])
    waited = int(re.findall(r"after (\d+)s", errors[0])[0])
    # Twice the lease life it saw, which a live runner renewing every third of its
    # 150 s ttl keeps above 100 s — less a renewal late by a few real ms under load
    # (197 was seen): 180 still tells twice the life from once (at most 150).
    assert waited >= 2 * 90
    assert server.requests_to(RESYNTHESIZE) == []
