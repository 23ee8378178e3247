"""``SQLiteJournal``: a durable-batch journal in one SQLite file (design §4).

Every statement runs on one dedicated worker thread that owns the connection, so the
event loop never waits on the disk and the connection is never shared between threads.
The file is in WAL mode with ``synchronous=FULL``: a write is on disk (fsynced) before
the coroutine that made it returns, so neither a killed process nor a power cut loses a
committed ``sending`` record (whose loss could charge an id twice). Writes that arrive
while a transaction is being synced are committed together in the next one, so many
concurrent writers share each fsync.

Several processes may share one file: SQLite serialises their transactions, and the
batch lease (a row holding the owner's token and a Unix expiry time) decides which of
them runs a batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ._clock import Clock
from ._journal import (
    BatchInUseError,
    JournalError,
    JournalRecord,
    JournalState,
    LeaseLostError,
)
from ._journal_batch import StoredJournal

__all__ = ["SQLiteJournal"]

logger = logging.getLogger("aurous_async")

#: ``PRAGMA application_id`` of a journal file ("AURJ"): tells ours from other databases.
APPLICATION_ID = 0x4155524A
#: ``PRAGMA user_version`` this code writes; a file with a higher one is refused.
SCHEMA_VERSION = 1
#: Seconds a transaction waits for another process's write lock before failing.
_BUSY_TIMEOUT = 10.0
# Between two tries to switch a new file to WAL while another connection writes to it.
_WAL_RETRY = 0.01
_pause = time.sleep  # (a test hook: it tells a test that a try met the lock)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner TEXT,                 -- the lease holder's token, NULL when released
    lease_expires REAL,         -- Unix time
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,     -- rowid: the order added
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    character_id TEXT NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT,
    sent_at REAL,
    request_id TEXT,
    status TEXT,
    character TEXT,             -- the last Character JSON (a rowid table stores it compactly)
    error_class TEXT,
    error_code TEXT,
    error_message TEXT,
    charged INTEGER NOT NULL DEFAULT 0,
    final INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    UNIQUE (batch_id, character_id)
);
"""

_COLUMNS = ("state, idempotency_key, sent_at, request_id, status, character, error_class, "
            "error_code, error_message, charged, final, updated_at")

_R = TypeVar("_R")


class SQLiteJournal(StoredJournal):
    """A journal in the SQLite file ``path`` (made if missing; its folder must exist).

    ::

        async with aurous_async.SQLiteJournal("refresh.db") as journal:
            async for r in s.characters.resynthesize_many(ids, journal=journal,
                                                          batch="spring-refresh"):
                ...

    ``lease_ttl`` is how long a batch stays locked to a runner that stopped renewing
    (it renews every third of that). ``clock`` (Unix time and sleeps) is for tests.
    Opening is lazy: the first call checks the file and raises :class:`JournalError`
    when it cannot be written, is corrupt, is not a journal, or was written by a newer
    aurous-async (such a file is never changed).
    """

    def __init__(self, path: str | os.PathLike[str], *, lease_ttl: float = 30.0,
                 clock: Clock | None = None) -> None:
        super().__init__(lease_ttl=lease_ttl, clock=clock)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path, not {type(path).__name__}")
        self.path = os.fspath(path)
        if not self.path:
            raise ValueError("path must not be empty")
        # Fixed now: a later chdir must not move the journal.
        self._file = Path(self.path).absolute()
        self._executor: ThreadPoolExecutor | None = None
        # Group commit: writes that arrive while a transaction is on disk wait here and
        # go together in the next one (one fsync for all), each still acknowledged only
        # once committed.
        self._queue: list[tuple[str, str, JournalRecord, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Touched only on the worker thread:
        self._conn: sqlite3.Connection | None = None
        self._batch_ids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SQLiteJournal({self.path!r})"

    # The worker thread --------------------------------------------------------------

    async def _call(self, fn: Callable[..., _R], *args: Any, create: bool = True) -> _R:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="aurous-journal")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, args, create)

    def _run(self, fn: Callable[..., _R], args: tuple[Any, ...], create: bool) -> _R:
        try:
            if self._conn is None:
                self._conn = self._connect(create)
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} cannot be used: {exc}") from exc

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not self._file.exists():
            raise JournalError(f"there is no journal at {self.path}")
        uri = self._file.as_uri() + ("?mode=rwc" if create else "?mode=rw")
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT, isolation_level=None)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = self._identify(conn)  # before changing anything in the file
        self._use_wal(conn)
        if version < SCHEMA_VERSION:
            # Another connection may be adding the schema to this new file right now;
            # every statement is idempotent, so doing it twice is harmless.
            with _transaction(conn):  # executescript would commit by itself
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _identify(self, conn: sqlite3.Connection) -> int:
        """The file's schema version; raises when it is not ours or is newer. One
        statement, so one snapshot: read apart, an id and a table count could come from
        either side of another connection's schema commit."""
        app_id, version, tables = conn.execute(
            "SELECT a.application_id, v.user_version, (SELECT count(*) FROM sqlite_master) "
            "FROM pragma_application_id() AS a, pragma_user_version() AS v").fetchone()
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise JournalError(f"{self.path} is an SQLite database but not an aurous-async "
                               "journal; it was left unchanged")
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} was written by a newer aurous-async (journal schema "
                f"{version}; this version reads up to {SCHEMA_VERSION}). Upgrade aurous-async "
                "to resume it; the file was left unchanged"
            )
        return int(version)

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> None:
        # Switching a file to WAL needs it to itself. While another connection holds the
        # write lock (adding the schema to this new file, say), SQLite refuses at once
        # with "database is locked", without the busy timeout; so this asks again, within
        # the same timeout in all. The mode is stored in the file: only a new file waits.
        deadline = time.monotonic() + _BUSY_TIMEOUT
        try:
            while True:
                left = deadline - time.monotonic()
                # A reader makes SQLite wait by itself (the busy timeout): not past ours.
                conn.execute(f"PRAGMA busy_timeout = {max(0, int(left * 1000))}")
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or left <= 0:
                        raise
                _pause(_WAL_RETRY)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")

    def _batch_id(self, conn: sqlite3.Connection, batch: str) -> int | None:
        found = self._batch_ids.get(batch)
        if found is None:
            row = conn.execute("SELECT id FROM batches WHERE name = ?", (batch,)).fetchone()
            if row is None:
                return None
            found = self._batch_ids[batch] = int(row[0])
        return found

    def _fence(self, conn: sqlite3.Connection, batch: str, owner: str) -> int:
        batch_id = self._batch_id(conn, batch)
        row = None if batch_id is None else conn.execute(
            "SELECT owner FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if batch_id is None or row is None or row[0] != owner:
            raise LeaseLostError(f"batch {batch!r} was taken over by another runner")
        return batch_id

    # Storage primitives (each runs on the worker thread) ------------------------------

    async def _acquire(self, batch: str, owner: str, now: float, ttl: float) -> None:
        await self._call(self._acquire_sync, batch, owner, now, ttl)

    def _acquire_sync(self, conn: sqlite3.Connection, batch: str, owner: str, now: float,
                      ttl: float) -> None:
        with _transaction(conn):
            row = conn.execute("SELECT id, owner, lease_expires FROM batches WHERE name = ?",
                               (batch,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO batches (name, owner, lease_expires, created_at) "
                             "VALUES (?, ?, ?, ?)", (batch, owner, now + ttl, now))
                return
            batch_id, holder, expires = row
            if holder is not None and expires > now:
                raise BatchInUseError(batch, expires - now)
            if holder is not None:
                logger.warning("taking over batch %s: its runner stopped renewing its lease "
                               "%.1fs ago", batch, now - expires + ttl)
            conn.execute("UPDATE batches SET owner = ?, lease_expires = ? WHERE id = ?",
                         (owner, now + ttl, batch_id))

    async def _renew(self, batch: str, owner: str, now: float, ttl: float) -> bool:
        return await self._call(self._renew_sync, batch, owner, now + ttl)

    def _renew_sync(self, conn: sqlite3.Connection, batch: str, owner: str,
                    expires: float) -> bool:
        cursor = conn.execute("UPDATE batches SET lease_expires = ? WHERE name = ? AND owner = ?",
                              (expires, batch, owner))
        return cursor.rowcount == 1

    async def _release(self, batch: str, owner: str) -> None:
        await self._call(self._release_sync, batch, owner)

    def _release_sync(self, conn: sqlite3.Connection, batch: str, owner: str) -> None:
        conn.execute("UPDATE batches SET owner = NULL, lease_expires = NULL "
                     "WHERE name = ? AND owner = ?", (batch, owner))

    async def _load(self, batch: str, *, create: bool = True) -> list[JournalRecord]:
        return await self._call(self._load_sync, batch, create=create)

    def _load_sync(self, conn: sqlite3.Connection, batch: str) -> list[JournalRecord]:
        batch_id = self._batch_id(conn, batch)
        if batch_id is None:
            return []
        rows = conn.execute(f"SELECT character_id, {_COLUMNS} FROM records WHERE batch_id = ? "
                            "ORDER BY id", (batch_id,)).fetchall()
        return [self._decode(row) for row in rows]

    def _decode(self, row: tuple[Any, ...]) -> JournalRecord:
        try:
            return JournalRecord(
                character_id=row[0], state=JournalState(row[1]), idempotency_key=row[2],
                sent_at=row[3], request_id=row[4], status=row[5],
                character=None if row[6] is None else json.loads(row[6]),
                error_class=row[7], error_code=row[8], error_message=row[9],
                charged=bool(row[10]), final=bool(row[11]), updated_at=row[12],
            )
        except ValueError as exc:  # an unknown state, or broken JSON
            raise JournalError(f"the journal {self.path} holds a corrupt record for "
                               f"{row[0]!r}: {exc}") from exc

    async def _add(self, batch: str, owner: str, records: Sequence[JournalRecord]) -> None:
        await self._call(self._add_sync, batch, owner, records)

    def _add_sync(self, conn: sqlite3.Connection, batch: str, owner: str,
                  records: Sequence[JournalRecord]) -> None:
        rows = [(record.character_id, *_values(record)) for record in records]
        with _transaction(conn):
            batch_id = self._fence(conn, batch, owner)
            conn.executemany(
                f"INSERT INTO records (batch_id, character_id, {_COLUMNS}) "
                f"VALUES ({batch_id}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    async def _put(self, batch: str, owner: str, record: JournalRecord) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, owner, record, done))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self._queue:
                items, self._queue = self._queue, []
                try:
                    outcomes = await self._call(self._put_many_sync,
                                                [item[:3] for item in items])
                except asyncio.CancelledError:
                    for *_, done in items:
                        done.cancel()
                    raise
                except Exception as exc:  # the transaction failed: every write in it did
                    outcomes = [exc] * len(items)
                for (*_, done), outcome in zip(items, outcomes, strict=True):
                    if done.done():
                        continue
                    if outcome is None:
                        done.set_result(None)
                    else:
                        done.set_exception(outcome)
        finally:
            self._flusher = None

    def _put_many_sync(self, conn: sqlite3.Connection,
                       items: list[tuple[str, str, JournalRecord]]) -> list[Exception | None]:
        """Write ``items`` in one transaction; per item, ``None`` or why it was refused."""
        outcomes: list[Exception | None] = []
        rows: list[tuple[Any, ...] | None] = []
        for _, _, record in items:
            try:  # encoded before taking the write lock, which is then short
                rows.append(_values(record))
                outcomes.append(None)
            except (TypeError, ValueError) as exc:  # not JSON: refused alone
                rows.append(None)
                outcomes.append(exc)
        assignments = ", ".join(f"{column} = ?" for column in _COLUMNS.split(", "))
        with _transaction(conn):
            for n, ((batch, owner, record), values) in enumerate(zip(items, rows, strict=True)):
                if values is None:
                    continue
                try:
                    batch_id = self._fence(conn, batch, owner)
                except LeaseLostError as exc:
                    outcomes[n] = exc
                    continue
                conn.execute(f"UPDATE records SET {assignments} "
                             "WHERE batch_id = ? AND character_id = ?",
                             (*values, batch_id, record.character_id))
        return outcomes

    async def _batch_names(self) -> list[str]:
        return await self._call(self._names_sync, create=False)

    def _names_sync(self, conn: sqlite3.Connection) -> list[str]:
        return [row[0] for row in conn.execute("SELECT name FROM batches")]

    async def _close(self) -> None:
        if self._executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=False)  # its one thread is idle now and exits

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _values(record: JournalRecord) -> tuple[Any, ...]:
    character = None if record.character is None else json.dumps(
        record.character, separators=(",", ":"), ensure_ascii=False)
    return (record.state.value, record.idempotency_key, record.sent_at, record.request_id,
            record.status, character, record.error_class, record.error_code,
            record.error_message, int(record.charged), int(record.final), record.updated_at)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock at once, so two processes never both read and then
    # both try to upgrade (which would fail one of them with "database is locked").
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # some errors (a full disk) have rolled it back already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
