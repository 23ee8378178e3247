"""Durable-batch journals: the resume rules, the state machine, leases, and the SQLite
store against real files and real killed processes.

``JournalContract`` holds the tests every store must pass; ``TestSQLiteContract`` runs
them here and ``tests/test_journal_redis.py`` runs them against a real redis-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aurous_async import FakeClock
from aurous_async import _journal_sqlite as journal_sqlite
from aurous_async._journal import (
    KEY_REUSE_LIMIT,
    BatchInUseError,
    JournalError,
    JournalRecord,
    JournalState,
    LeaseLostError,
    ResumeAction,
    resume_action,
)
from aurous_async._journal_batch import StoredJournal
from aurous_async._journal_sqlite import SQLiteJournal, _transaction

from .fork_worker import spawn

P, SENDING, SENT, DONE, FAILED = (JournalState.PENDING, JournalState.SENDING, JournalState.SENT,
                                  JournalState.DONE, JournalState.FAILED)
NOW = 1_800_000_000.0
HOUR = 3600.0
CHAR = {"id": "char_a", "status": "ready", "name": "Ada",
        "refs": [{"pose": "front", "url": "https://cdn.example/a.png?token=SECRET123"}]}
Factory = Callable[..., StoredJournal]


def rec(state: JournalState, **kw: Any) -> JournalRecord:
    return JournalRecord(character_id="c", state=state, **kw)


@pytest.mark.parametrize(("record", "action"), [
    (rec(DONE, charged=True), ResumeAction.FROM_JOURNAL),
    (rec(FAILED, charged=True, error_class="SynthesisFailedError"), ResumeAction.FROM_JOURNAL),
    (rec(FAILED, final=True, error_class="NotFoundError"), ResumeAction.FROM_JOURNAL),
    (rec(SENT, idempotency_key="k", sent_at=NOW - 1), ResumeAction.WATCH),
    (rec(SENT, idempotency_key="k", sent_at=NOW - 48 * HOUR), ResumeAction.WATCH),
    (rec(SENDING, idempotency_key="k", sent_at=NOW - 1), ResumeAction.POST_WITH_RECORDED_KEY),
    (rec(SENDING, idempotency_key="k", sent_at=NOW - 22 * HOUR),
     ResumeAction.POST_WITH_RECORDED_KEY),
    (rec(SENDING, idempotency_key="k", sent_at=NOW - KEY_REUSE_LIMIT),
     ResumeAction.POST_WITH_RECORDED_KEY),
    (rec(SENDING, idempotency_key="k", sent_at=NOW - KEY_REUSE_LIMIT - 1),
     ResumeAction.CHECK_THEN_POST),
    (rec(P), ResumeAction.DISPATCH),
    (rec(P, idempotency_key="k", sent_at=NOW - 60, error_class="ServerError"),
     ResumeAction.DISPATCH),
    (rec(P, idempotency_key="k", sent_at=NOW - 60, error_class="AuthenticationError"),
     ResumeAction.DISPATCH),
    (rec(P, error_class="InsufficientCreditsError"), ResumeAction.DISPATCH),
    (rec(P, idempotency_key="k", sent_at=NOW - 30 * HOUR, error_class="APITimeoutError"),
     ResumeAction.CHECK_THEN_POST),
])
def test_resume_action(record: JournalRecord, action: ResumeAction) -> None:
    """Guards the §4 resume table: a charged id POSTed again, a sent one re-sent, or a
    stale key reused without a check would charge twice; a pending one skipped never runs."""
    assert resume_action(record, now=NOW) is action


@pytest.mark.parametrize(("batch", "error"), [
    ("", ValueError), ("x" * 201, ValueError), ("spring refresh", ValueError),
    ("tab\there", ValueError), ("café", ValueError), (None, TypeError), (b"b", TypeError),
])
async def test_bad_batch_names_are_refused_before_touching_the_file(
        tmp_path: Path, batch: Any, error: type[Exception]) -> None:
    """Guards the batch-name rule (1-200 printable ASCII, no spaces), checked first."""
    journal = SQLiteJournal(tmp_path / "j.db")
    with pytest.raises(error):
        await journal.open_batch(batch, ["a"])
    with pytest.raises(error):
        await journal.read_batch(batch)
    assert not (tmp_path / "j.db").exists()
    assert (await journal.open_batch("x" * 200, ["a"])).name == "x" * 200
    await journal.aclose()


@pytest.mark.parametrize(("ids", "error"), [
    ("char_a", TypeError), ([1], TypeError), ([""], ValueError), (["x" * 257], ValueError),
    (["a\nb"], ValueError), (None, TypeError),
])
async def test_bad_ids_are_refused(tmp_path: Path, ids: Any, error: type[Exception]) -> None:
    """Guards id validation: a bare str would become one batch per letter."""
    async with SQLiteJournal(tmp_path / "j.db") as journal:
        with pytest.raises(error):
            await journal.open_batch("b", ids)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"lease_ttl": 0}, ValueError), ({"lease_ttl": float("nan")}, ValueError),
    ({"lease_ttl": True}, TypeError), ({"lease_ttl": "30"}, TypeError),
])
def test_bad_constructor_arguments(tmp_path: Path, kwargs: Any, error: type[Exception]) -> None:
    """Guards argument checks: a zero lease would let any second runner in at once."""
    with pytest.raises(error):
        SQLiteJournal(tmp_path / "j.db", **kwargs)
    with pytest.raises(TypeError):
        SQLiteJournal(3)  # type: ignore[arg-type]


def test_record_repr_hides_the_character_json() -> None:
    """Guards secrets: the Character JSON carries signed ref URLs (token=...)."""
    record = rec(DONE, character=CHAR, status="ready")
    assert "SECRET123" not in repr(record)
    assert "character={…}" in repr(record)


async def walk(batch: Any, cid: str, to: str) -> None:
    """Move ``cid`` of an open batch through the writes that lead to ``to``."""
    if to == "pending":
        await batch.mark_sending(cid, f"key-{cid}", NOW)
        await batch.mark_pending(cid, error_class="ServerError", code="internal_error",
                                 message="boom")
        return
    await batch.mark_sending(cid, f"key-{cid}", NOW)
    if to == "final":
        await batch.mark_failed(cid, error_class="NotFoundError", code="resource_not_found",
                                message="gone", charged=False, final=True)
        return
    if to == "sending":
        return
    await batch.mark_sent(cid, f"req-{cid}", {**CHAR, "id": cid, "status": "synthesizing"})
    if to == "done":
        await batch.mark_done(cid, "ready", {**CHAR, "id": cid})
    elif to == "failed":
        await batch.mark_failed(cid, error_class="SynthesisFailedError", code=None,
                                message="synthesis failed", charged=True, final=False)


class JournalContract:
    """What every journal store must do. Subclasses provide ``make``: a factory of
    journals that share one store (two of them act as two runners)."""

    async def test_every_state_round_trips(self, make: Factory) -> None:
        """Guards persistence: each field of each state reads back as written."""
        ids = ["p", "q", "s1", "s2", "d", "f", "x"]
        async with make() as journal, await journal.open_batch("rt", ids) as batch:
            for cid, to in [("q", "pending"), ("s1", "sending"), ("s2", "sent"),
                            ("d", "done"), ("f", "failed"), ("x", "final")]:
                await walk(batch, cid, to)
            written = batch.records()
        assert [r.state.value for r in written] == [
            "pending", "pending", "sending", "sent", "done", "failed", "failed"]
        assert written[1].idempotency_key == "key-q" and written[1].error_code == "internal_error"
        assert written[5].charged and not written[5].final and written[5].status == "synthesizing"
        assert written[6].final and not written[6].charged
        assert written[4].character == {**CHAR, "id": "d"} and written[4].request_id == "req-d"
        async with make() as journal:
            assert await journal.read_batch("rt") == written
            async with await journal.open_batch("rt", []) as again:
                assert again.records() == written
                assert again.counts() == {P: 2, SENDING: 1, SENT: 1, DONE: 1, FAILED: 2}

    async def test_new_ids_are_added_and_missing_ones_left_alone(self, make: Factory) -> None:
        """Guards §4: a re-run adds new ids in order and never drops or resets old ones."""
        async with make() as journal:
            async with await journal.open_batch("b", ["a", "b", "c", "b"]) as batch:
                await walk(batch, "a", "done")
            async with await journal.open_batch("b", ["c", "d", "a"]) as batch:
                assert [r.character_id for r in batch.records()] == ["a", "b", "c", "d"]
                assert batch.record("a").state is DONE and batch.record("d").state is P
                assert "b" in batch and len(batch) == 4
            assert await journal.batches() == ["b"]

    async def test_second_runner_is_refused_at_once(self, make: Factory) -> None:
        """Guards one runner per batch: BatchInUseError with the lease's time left."""
        async with make(lease_ttl=30.0) as first, make(lease_ttl=30.0) as second:
            await (await first.open_batch("b", ["a"])).aclose()
            batch = await first.open_batch("b", ["a"])  # nothing new to add: the lease alone
            with pytest.raises(BatchInUseError) as caught:
                await second.open_batch("b", ["a"])
            assert 25.0 < caught.value.expires_in <= 30.0
            assert caught.value.batch == "b"
            with pytest.raises(BatchInUseError):
                await first.open_batch("b", ["a"])  # the same journal twice: still two runners
            assert await second.read_batch("b") == batch.records()  # reading needs no lease
            await batch.aclose()
            await (await second.open_batch("b", [])).aclose()  # released on close

    async def test_closing_the_journal_releases_its_batches(self, make: Factory) -> None:
        """Guards aclose: an open batch's lease would otherwise block the next run."""
        first = make()
        batch = await first.open_batch("b", ["a"])
        await first.aclose()
        await first.aclose()  # idempotent
        with pytest.raises(JournalError):
            await batch.mark_sending("a", "k", NOW)
        with pytest.raises(JournalError):
            await first.open_batch("b", ["a"])
        async with make() as second:
            await (await second.open_batch("b", ["a"])).aclose()

    @pytest.mark.parametrize(("start", "call"), [
        ("done", lambda b: b.mark_pending("a")),
        ("done", lambda b: b.mark_sending("a", "key-a", NOW)),
        ("sent", lambda b: b.mark_sending("a", "key-a", NOW)),
        ("sent", lambda b: b.mark_pending("a")),
        ("failed", lambda b: b.mark_done("a", "ready", CHAR)),
        ("pending", lambda b: b.mark_sending("a", "another-key", NOW)),
        ("new", lambda b: b.mark_done("a", "ready", CHAR)),
        ("new", lambda b: b.mark_sent("a", "req")),
        ("new", lambda b: b.mark_failed("a", error_class="ServerError", code=None,
                                        message=None, charged=False, final=False)),
    ])
    async def test_forbidden_transitions_change_nothing(self, make: Factory, start: str,
                                                        call: Any) -> None:
        """Guards the state machine: a charged id moved back to pending, or re-sent under
        a new key, would be charged again on resume."""
        async with make() as journal, await journal.open_batch("b", ["a"]) as batch:
            if start != "new":
                await walk(batch, "a", start)
            before = await journal.read_batch("b")
            with pytest.raises(ValueError, match=r"not|key|never|retryable"):
                await call(batch)
            assert await journal.read_batch("b") == before == batch.records()
            with pytest.raises(KeyError):
                await batch.mark_sending("nope", "k", NOW)

    async def test_a_bad_write_is_refused_alone(self, make: Factory) -> None:
        """Guards atomicity: an unserialisable character must not half-write a record,
        nor sink the writes committed with it."""
        async with make() as journal, await journal.open_batch("b", ["a", "b"]) as batch:
            await batch.mark_sending("a", "key-a", NOW)
            bad, good = await asyncio.gather(
                batch.mark_sent("a", "req", {"status": "ready", "x": object()}),
                batch.mark_sending("b", "key-b", NOW), return_exceptions=True)
            assert isinstance(bad, TypeError) and not isinstance(good, BaseException)
            assert [r.state for r in await journal.read_batch("b")] == [SENDING, SENDING]
            assert batch.record("a").state is SENDING
            await batch.mark_sending("a", "key-a", NOW + 50)
            assert batch.record("a").sent_at == NOW  # the key's life began at the first send

    async def test_writes_of_one_id_apply_in_call_order(self, make: Factory) -> None:
        """Guards per-id ordering: writes of one id made at once (while another id's
        overlap them) must each see the state the previous one left."""
        async with make() as journal, await journal.open_batch("b", ["a", "b"]) as batch:
            results = await asyncio.gather(
                batch.mark_sending("a", "key-a", NOW), batch.mark_sending("b", "key-b", NOW),
                batch.mark_sent("a", "req-a"), batch.mark_done("a", "ready", CHAR))
            assert [r.state for r in results] == [SENDING, SENDING, SENT, DONE]
            assert [r.state for r in await journal.read_batch("b")] == [DONE, SENDING]

    async def test_closing_a_batch_lets_started_writes_commit_first(self,
                                                                    make: Factory) -> None:
        """Guards close ordering: a write started before aclose commits under the lease,
        and the lease is then really released."""
        async with make() as journal:
            batch = await journal.open_batch("b", ["a"])
            sends = [batch.mark_sending("a", "key-a", NOW) for _ in range(10)]
            writes = [asyncio.create_task(write) for write in (  # each waits for the last
                *sends, batch.mark_sent("a", "req-a"), batch.mark_done("a", "ready", CHAR))]
            await asyncio.sleep(0)
            await batch.aclose()
            assert [(await write).state for write in writes] == [SENDING] * 10 + [SENT, DONE]
            assert (await journal.read_batch("b"))[0].state is DONE
            await (await journal.open_batch("b", [])).aclose()

    async def test_a_cancelled_write_still_commits(self, make: Factory) -> None:
        """Guards cancellation: a caller cancelled mid-write must not leave memory and
        store disagreeing (the next transition would then be refused or wrong)."""
        async with make() as journal, await journal.open_batch("b", ["a"]) as batch:
            task = asyncio.create_task(batch.mark_sending("a", "key-a", NOW))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await batch.mark_sent("a", "req-a")  # needs the cancelled write committed
            assert (await journal.read_batch("b"))[0].state is SENT

    async def test_ten_thousand_ids_open_quickly(self, make: Factory) -> None:
        """Guards the cost target loosely (the real figure is in bench_journal.py)."""
        ids = [f"char_{i:05d}" for i in range(10_000)]
        async with make() as journal:
            start = time.perf_counter()
            async with await journal.open_batch("big", ids) as batch:
                assert batch.counts()[P] == 10_000
            async with await journal.open_batch("big", ids) as batch:
                assert len(batch) == 10_000
            assert time.perf_counter() - start < 5.0


class TestSQLiteContract(JournalContract):
    @pytest.fixture
    def make(self, tmp_path: Path, clock: FakeClock) -> Factory:
        return lambda **kw: SQLiteJournal(tmp_path / "j.db", clock=clock, **kw)


def ahead(clock: FakeClock, seconds: float) -> FakeClock:
    """A clock whose Unix time is ``seconds`` past ``clock``'s (another runner, later)."""
    return FakeClock(wall_start=clock.time() + seconds)


async def test_a_dead_runners_lease_is_taken_over_and_fenced(tmp_path: Path,
                                                             clock: FakeClock) -> None:
    """Guards takeover and fencing: a lease not renewed for lease_ttl is taken over, and
    the old runner's writes are then refused instead of overwriting the new runner's."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, lease_ttl=30, clock=clock) as stalled:
        old = await stalled.open_batch("b", ["a"])
        with pytest.raises(BatchInUseError):
            await SQLiteJournal(path, clock=ahead(clock, 29)).open_batch("b", ["a"])
        async with SQLiteJournal(path, lease_ttl=30, clock=ahead(clock, 31)) as fresh, \
                await fresh.open_batch("b", ["a"]) as new:
            await new.mark_sending("a", "key-new", NOW)
            with pytest.raises(LeaseLostError):
                await old.mark_sending("a", "key-old", NOW)
            assert old.lease_lost
            assert (await fresh.read_batch("b"))[0].idempotency_key == "key-new"


async def test_renewal_keeps_the_lease_and_notices_its_loss(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    """Guards renewal: a live runner past lease_ttl keeps its batch, and a runner whose
    lease was taken over learns it from the next renewal (lease_lost)."""
    path = tmp_path / "j.db"

    async def tick(journal: SQLiteJournal) -> None:
        await clock.advance(10)  # a renewal is due every 10 s
        await journal.read_batch("b")  # queued behind it on the one worker thread
        for _ in range(5):
            await asyncio.sleep(0)

    async with SQLiteJournal(path, lease_ttl=30, clock=clock) as journal:
        batch = await journal.open_batch("b", ["a"])
        for _ in range(10):
            await tick(journal)
        with pytest.raises(BatchInUseError):
            await SQLiteJournal(path, clock=ahead(clock, 25)).open_batch("b", [])
        assert not batch.lease_lost
        await SQLiteJournal(path, clock=ahead(clock, 31)).open_batch("b", [])
        await tick(journal)
        assert batch.lease_lost


async def test_a_final_error_after_the_2xx_is_recorded_as_charged(tmp_path: Path) -> None:
    """Guards ``charged``: a 404 while watching a sent id still cost a charge, and the
    record must say so (``batch show`` and the charged-id count rely on it)."""
    async with SQLiteJournal(tmp_path / "j.db") as journal, \
            await journal.open_batch("b", ["a"]) as batch:
        await walk(batch, "a", "sent")
        record = await batch.mark_failed("a", error_class="NotFoundError", code=None,
                                         message=None, charged=False, final=True)
        assert record.charged and record.final
        assert (await journal.read_batch("b"))[0].charged


async def test_a_relative_path_is_fixed_when_the_journal_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards relative paths: a chdir before the first write must not move the journal
    (the next run would find no record and charge every id again)."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    journal = SQLiteJournal("j.db")
    monkeypatch.chdir(tmp_path / "elsewhere")
    async with journal:
        await (await journal.open_batch("b", ["a"])).aclose()
    assert (tmp_path / "j.db").exists() and not (tmp_path / "elsewhere" / "j.db").exists()


async def test_concurrent_writes_share_a_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards group commit: 100 writes made at once must not cost 100 fsyncs (at a few
    ms each on a busy disk, the journal would then slow a large fan-out down)."""
    begins: list[str] = []
    connect = sqlite3.connect

    class Counting(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.startswith("BEGIN"):
                begins.append(sql)
            return super().execute(sql, *args)

    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **kw: connect(*a, **kw, factory=Counting))
    ids = [f"c{i}" for i in range(100)]
    async with SQLiteJournal(tmp_path / "j.db") as journal, \
            await journal.open_batch("b", ids) as batch:
        begins.clear()
        await asyncio.gather(*(batch.mark_sending(cid, f"key-{cid}", NOW) for cid in ids))
        assert len(begins) <= 3
        assert {r.state for r in await journal.read_batch("b")} == {SENDING}


async def test_statements_never_run_on_the_event_loop_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards "never blocks the event loop": every statement runs on the worker thread."""
    threads: set[int] = set()
    connect = sqlite3.connect

    class Recording(sqlite3.Connection):
        def execute(self, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            threads.add(threading.get_ident())
            return super().execute(*args)

    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **kw: connect(*a, **kw, factory=Recording))
    async with SQLiteJournal(tmp_path / "j.db") as journal, \
            await journal.open_batch("b", ["a"]) as batch:
        await batch.mark_sending("a", "k", NOW)
        await journal.read_batch("b")
    assert threads and threading.get_ident() not in threads


def contents(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


async def expect_refused(path: Path, *words: str) -> None:
    before = contents(path)
    journal = SQLiteJournal(path)
    with pytest.raises(JournalError) as caught:
        await journal.open_batch("b", ["a"])
    for word in (str(path), *words):
        assert word in str(caught.value)
    await journal.aclose()
    assert contents(path) == before  # never overwritten


async def test_unwritable_paths_are_a_clear_error(tmp_path: Path) -> None:
    """Guards "unwritable path": a typed error naming the path, before any request."""
    await expect_refused(tmp_path / "no-such-dir" / "j.db", "cannot be used")
    await expect_refused(tmp_path, "cannot be used")  # a directory


async def test_a_corrupt_file_is_refused_untouched(tmp_path: Path) -> None:
    """Guards corrupt files: garbage or a truncated journal is an error, never rewritten."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    await expect_refused(garbage)
    truncated = tmp_path / "truncated.db"
    async with SQLiteJournal(truncated) as journal:
        await (await journal.open_batch("b", [f"c{i}" for i in range(5000)])).aclose()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    await expect_refused(truncated)


async def test_a_foreign_database_and_a_newer_schema_are_refused(tmp_path: Path) -> None:
    """Guards the schema check: another app's database, or a journal from a newer SDK,
    is refused with a message and left as it was."""
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    await expect_refused(foreign, "not an aurous-async journal")
    newer = tmp_path / "newer.db"
    async with SQLiteJournal(newer) as journal:
        await (await journal.open_batch("b", ["a"])).aclose()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    await expect_refused(newer, "newer aurous-async", "schema 2")


def test_runners_and_readers_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Guards opening a new file while other connections do (runners starting as
    ``batch show`` reads it): telling a journal from another database with reads from
    either side of another's schema commit ("not an aurous-async journal"), or switching
    to WAL while another writes ("database is locked"). Real threads racing on real
    files, many times: before the fix about one round in five failed."""
    failures: list[BaseException] = []

    async def run(path: Path, batch: str) -> None:
        async with SQLiteJournal(path) as journal:
            await (await journal.open_batch(batch, ["a"])).aclose()

    async def read(path: Path) -> None:
        async with SQLiteJournal(path) as journal:
            await journal.batches()

    def runner(path: Path, batch: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            asyncio.run(run(path, batch))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    def reader(path: Path, start: threading.Barrier, runners_done: threading.Event) -> None:
        start.wait()
        while not runners_done.is_set():
            try:
                asyncio.run(read(path))
            except JournalError as exc:
                if "no journal" not in str(exc):  # the runners have not made it yet
                    failures.append(exc)

    for round_ in range(40):
        path = tmp_path / f"j{round_}.db"
        start, runners_done = threading.Barrier(3), threading.Event()
        runners = [threading.Thread(target=runner, args=(path, f"b{n}", start))
                   for n in range(2)]
        watcher = threading.Thread(target=reader, args=(path, start, runners_done))
        for thread in [*runners, watcher]:
            thread.start()
        for thread in runners:
            thread.join()
        runners_done.set()
        watcher.join()
    assert failures == []


def test_a_new_file_another_connection_is_writing_is_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the switch to WAL: SQLite refuses it at once ("database is locked"),
    without its busy timeout, while another connection holds the write lock of a new
    file; opening must wait for that lock like every other statement does. The lock is
    let go only once a try has met it."""
    path = tmp_path / "j.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a runner adding the schema, say
    met_the_lock = threading.Event()

    def pause(seconds: float) -> None:
        met_the_lock.set()
        time.sleep(seconds)

    monkeypatch.setattr(journal_sqlite, "_pause", pause)
    failures: list[BaseException] = []

    def open_journal() -> None:
        async def run() -> None:
            async with SQLiteJournal(path) as journal:
                await (await journal.open_batch("b", ["a"])).aclose()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    opener = threading.Thread(target=open_journal)
    opener.start()
    try:
        for _ in range(3000):  # 30 s only bounds a test gone wrong
            if met_the_lock.wait(0.01) or not opener.is_alive():
                break
        assert failures == [] and met_the_lock.is_set() and opener.is_alive()
    finally:
        other.execute("COMMIT")
        other.close()
        opener.join()
    assert failures == []


async def test_a_new_file_locked_past_the_busy_timeout_is_a_journal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the wait for WAL ending: a lock never let go is the same typed error as
    any other statement's busy timeout, not an opening that never returns."""
    monkeypatch.setattr(journal_sqlite, "_BUSY_TIMEOUT", 0.05)
    path = tmp_path / "j.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    async with SQLiteJournal(path) as journal:
        try:
            with pytest.raises(JournalError, match="locked"):
                # 10 s only bounds a test gone wrong (the wait is 0.05 s here).
                await asyncio.wait_for(journal.open_batch("b", ["a"]), 10)
        finally:
            other.close()  # so a worker still trying can end, and the journal close


async def test_a_corrupt_record_is_a_journal_error(tmp_path: Path) -> None:
    """Guards decoding: an unknown state read back is a JournalError, not a crash."""
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        await (await journal.open_batch("b", ["a"])).aclose()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE records SET state = 'exploded'")
    conn.commit()
    conn.close()
    async with SQLiteJournal(path) as journal:
        with pytest.raises(JournalError, match="corrupt record"):
            await journal.read_batch("b")


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    """Guards the transaction helper: an error half-way rolls every statement back."""
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")

    def insert_then_fail() -> None:
        with _transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        insert_then_fail()
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    conn.close()


async def test_reading_a_missing_journal_does_not_create_it(tmp_path: Path) -> None:
    """Guards ``batch show`` on a typo: an error, not a new empty file."""
    path = tmp_path / "typo.db"
    async with SQLiteJournal(path) as journal:
        with pytest.raises(JournalError, match="no journal"):
            await journal.read_batch("b")
        with pytest.raises(JournalError, match="no journal"):
            await journal.batches()
    assert not path.exists()


# A runner that is killed: writes its steps for char_0 and SIGKILLs itself (die:STEP),
# or walks every id printing each committed write until the parent kills it (stream).
CHILD = r"""
import asyncio, os, signal, sys
from aurous_async._journal_redis import RedisJournal
from aurous_async._journal_sqlite import SQLiteJournal, _transaction

CHAR = {"id": "x", "status": "ready"}
STEPS = {"sending": ["sending"], "sent": ["sending", "sent"],
         "done": ["sending", "sent", "done"], "failed": ["sending", "sent", "failed"],
         "pending": ["sending", "pending"]}

async def step(batch, cid, name):
    if name == "sending":
        await batch.mark_sending(cid, "key-" + cid, 1.8e9)
    elif name == "sent":
        await batch.mark_sent(cid, "req-" + cid, CHAR)
    elif name == "done":
        await batch.mark_done(cid, "ready", CHAR)
    elif name == "failed":
        await batch.mark_failed(cid, error_class="SynthesisFailedError", code=None,
                                message="no", charged=True, final=False)
    else:
        await batch.mark_pending(cid, error_class="ServerError", code=None, message=None)

async def main(kind, where, prefix, mode):
    journal = (SQLiteJournal(where) if kind == "sqlite"
               else RedisJournal.from_url(where, prefix=prefix))
    ids = ["char_%d" % i for i in range(300)]
    batch = await journal.open_batch("crash", ids)
    if mode.startswith("die:"):
        for name in STEPS[mode[4:]]:
            await step(batch, "char_0", name)
        os.kill(os.getpid(), signal.SIGKILL)
    for cid in ids:
        for name in STEPS["done"]:
            await step(batch, cid, name)
            print(cid, name, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""

RANK = {"pending": 0, "sending": 1, "sent": 2, "done": 3}


async def run_child(kind: str, where: str, prefix: str, mode: str,
                    kill_after: int | None = None) -> dict[str, str]:
    """Run CHILD until it dies; returns the last write it acknowledged per id. (A fork
    of a Python that has imported the SDK: see ``fork_worker``.)"""
    proc = await spawn(CHILD, kind, where, prefix, mode)
    acked: dict[str, str] = {}
    assert proc.stdout is not None
    for _ in range(kill_after or 0):
        cid, state = (await proc.stdout.readline()).decode().split()
        acked[cid] = state
    if kill_after is not None:
        proc.send_signal(signal.SIGKILL)
    _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return acked


async def check_crash(journal: StoredJournal, acked: dict[str, str]) -> None:
    """Every acknowledged write is in the journal; every record is a consistent state."""
    records = await journal.read_batch("crash")
    assert len(records) == 300
    for record in records:
        assert RANK[record.state.value] >= RANK.get(acked.get(record.character_id, ""), 0)
        if record.state is not P:
            assert record.idempotency_key == f"key-{record.character_id}"
        if record.state in (SENT, DONE):
            assert record.request_id == f"req-{record.character_id}" and record.charged


@pytest.mark.parametrize("step", ["sending", "sent", "done", "failed", "pending"])
async def test_sigkill_after_a_write_keeps_it(tmp_path: Path, step: str) -> None:
    """Guards write-ahead durability: the write that returned just before a SIGKILL is
    what the next life reads, and the dead runner's lease blocks a second runner until
    lease_ttl has passed."""
    path = tmp_path / "j.db"
    await run_child("sqlite", str(path), "", f"die:{step}")
    async with SQLiteJournal(path) as journal:
        first = (await journal.read_batch("crash"))[0]
        assert first.state.value == ("failed" if step == "failed" else step)
        assert first.idempotency_key == "key-char_0"
        assert first.charged is (step in ("sent", "done", "failed"))
        with pytest.raises(BatchInUseError) as caught:
            await journal.open_batch("crash", [])
        assert caught.value.expires_in > 20
    later = FakeClock(wall_start=time.time() + 31)
    async with SQLiteJournal(path, clock=later) as journal:
        await (await journal.open_batch("crash", [])).aclose()


@pytest.mark.parametrize("kill_after", [1, 2, 40, 301])
async def test_sigkill_mid_stream_loses_no_acknowledged_write(tmp_path: Path,
                                                              kill_after: int) -> None:
    """Guards crash consistency: a runner killed at an arbitrary instant while writing
    leaves a readable journal holding every write it had acknowledged."""
    path = tmp_path / "j.db"
    acked = await run_child("sqlite", str(path), "", "stream", kill_after)
    async with SQLiteJournal(path) as journal:
        await check_crash(journal, acked)

