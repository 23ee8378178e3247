"""The store-independent half of a journal: batch handles with their lease renewal,
the state machine of the writes, and the base class both stores build on."""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from ._clock import SYSTEM_CLOCK, Clock
from ._journal import (
    JournalError,
    JournalRecord,
    JournalState,
    LeaseLostError,
    check_batch_name,
    check_ids,
)

__all__ = ["Journal", "JournalBatch", "StoredJournal"]

logger = logging.getLogger("aurous_async")

_KEY = re.compile(r"[\x21-\x7e]{1,256}")


def _text(value: object, name: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str" + (" or None" if optional else ""))
    return value


def _character(value: object) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise TypeError(f"character must be a mapping (the Character JSON), not {type(value).__name__}")


class StoredJournal(abc.ABC):
    """The store-independent half of a journal: lease renewal, handles, validation.

    Subclasses implement the storage primitives (the ``_``-prefixed coroutines below);
    each is atomic, and the fenced ones raise :class:`LeaseLostError` when ``owner`` no
    longer holds the batch.
    """

    def __init__(self, *, lease_ttl: float, clock: Clock | None) -> None:
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)):
            raise TypeError(f"lease_ttl must be a number, not {type(lease_ttl).__name__}")
        if not (math.isfinite(lease_ttl) and lease_ttl > 0):
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.lease_ttl = float(lease_ttl)
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._handles: set[JournalBatch] = set()
        self._closed = False

    async def open_batch(self, batch: str, ids: Iterable[str]) -> JournalBatch:
        """Take the lease on ``batch`` and return its handle.

        Adds the ids not in the batch yet as ``pending`` (in one transaction); ids of the
        batch missing from ``ids`` are left alone. Raises :class:`BatchInUseError` at once
        when another live runner holds the batch, and takes over a lease its runner
        stopped renewing ``lease_ttl`` seconds ago. Close the handle (``async with``) to
        release the lease.
        """
        name = check_batch_name(batch)
        wanted = check_ids(ids)
        self._check_open()
        owner = uuid.uuid4().hex
        now = self.clock.time()
        await self._acquire(name, owner, now, self.lease_ttl)
        try:
            existing = await self._load(name)
            known = {record.character_id for record in existing}
            new = [JournalRecord(character_id=cid, state=JournalState.PENDING, updated_at=now)
                   for cid in wanted if cid not in known]
            if new:
                await self._add(name, owner, new)
        except BaseException:
            await self._release_quietly(name, owner)
            raise
        handle = JournalBatch(self, name, owner, [*existing, *new])
        self._handles.add(handle)
        return handle

    async def read_batch(self, batch: str) -> list[JournalRecord]:
        """Every record of ``batch`` in the order added (``[]`` for an unknown batch),
        read without taking the lease: safe while a runner works on it."""
        name = check_batch_name(batch)
        self._check_open()
        return await self._load(name, create=False)

    async def batches(self) -> list[str]:
        """The names of the batches in this journal, sorted."""
        self._check_open()
        return sorted(await self._batch_names())

    async def aclose(self) -> None:
        """Close the open batch handles (releasing their leases) and the store.

        Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in list(self._handles):
            await handle.aclose()
        await self._close()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"{self!r} is closed")

    async def _release_quietly(self, batch: str, owner: str) -> None:
        try:
            await self._release(batch, owner)
        except JournalError as exc:
            # The lease lapses by itself after lease_ttl; nothing is lost.
            logger.warning("could not release the lease of batch %s: %s", batch, exc)

    # Storage primitives --------------------------------------------------------------

    @abc.abstractmethod
    async def _acquire(self, batch: str, owner: str, now: float, ttl: float) -> None:
        """Make ``owner`` the lease holder, or raise :class:`BatchInUseError`."""

    @abc.abstractmethod
    async def _renew(self, batch: str, owner: str, now: float, ttl: float) -> bool:
        """Extend ``owner``'s lease; ``False`` when someone else holds it now."""

    @abc.abstractmethod
    async def _release(self, batch: str, owner: str) -> None:
        """Give the lease up if ``owner`` still holds it."""

    @abc.abstractmethod
    async def _load(self, batch: str, *, create: bool = True) -> list[JournalRecord]:
        """The records of ``batch`` in the order added. ``create=False``: do not make
        the store (a missing SQLite file is an error)."""

    @abc.abstractmethod
    async def _add(self, batch: str, owner: str, records: Sequence[JournalRecord]) -> None:
        """Append new records after the existing ones, in one transaction; fenced."""

    @abc.abstractmethod
    async def _put(self, batch: str, owner: str, record: JournalRecord) -> None:
        """Replace one existing record; fenced."""

    @abc.abstractmethod
    async def _batch_names(self) -> list[str]:
        """The names of every batch in the store, in any order."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Close the store (called once, after the handles are closed)."""


_S = TypeVar("_S", bound=StoredJournal)

class JournalBatch:
    """An open batch: the lease holder's view of its records, and the writes.

    Reads (:meth:`records`, :meth:`record`, :meth:`counts`) answer from memory; each
    ``mark_*`` is committed to the store before it returns, survives the cancellation of
    its caller, and raises :class:`LeaseLostError` once another runner has taken the
    batch over. Writes of one id apply in call order; writes of different ids overlap.
    ``ValueError`` means a transition the state machine forbids (for instance ``done``
    back to ``pending``), ``KeyError`` an id not in the batch.
    """

    def __init__(self, journal: StoredJournal, name: str, owner: str,
                 records: Sequence[JournalRecord]) -> None:
        self.journal = journal
        self.name = name
        self._owner = owner
        self._records = {record.character_id: record for record in records}
        # The last write of each id still in flight: a write waits for the one before it
        # (each checks the state it moves), while writes of different ids overlap, so a
        # store can commit them together.
        self._inflight: dict[str, asyncio.Task[JournalRecord]] = {}
        self._lease_lost = False
        self._closed = False
        self._renewal = asyncio.ensure_future(self._renew_forever())

    @property
    def lease_lost(self) -> bool:
        """True once another runner took the batch over; every write then fails."""
        return self._lease_lost

    def records(self) -> list[JournalRecord]:
        """Every record of the batch (ids of earlier calls included), in the order added."""
        return list(self._records.values())

    def record(self, character_id: str) -> JournalRecord:
        """The record of ``character_id``; ``KeyError`` if it is not in the batch."""
        return self._records[character_id]

    def counts(self) -> dict[JournalState, int]:
        """How many records are in each state (every state listed, zeros included)."""
        found = Counter(record.state for record in self._records.values())
        return {state: found[state] for state in JournalState}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, character_id: object) -> bool:
        return character_id in self._records

    async def mark_sending(self, character_id: str, key: str, sent_at: float) -> JournalRecord:
        """Write ahead: the POST of ``character_id`` is about to leave under ``key``.

        From ``pending`` or ``sending``. A recorded key must be reused (``ValueError``
        otherwise: a new key could charge twice), and the first ``sent_at`` is kept,
        since the key's 24 h life on the server began then.
        """
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError("key must be 1-256 printable ASCII characters, no spaces")
        if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) \
                or not math.isfinite(sent_at) or sent_at <= 0:
            raise ValueError(f"sent_at must be a positive Unix time, got {sent_at!r}")

        def change(old: JournalRecord) -> JournalRecord:
            _expect(old, JournalState.PENDING, JournalState.SENDING)
            if old.idempotency_key is not None and old.idempotency_key != key:
                raise ValueError(f"{old.character_id!r} was sent under another key; reuse it")
            return attrs.evolve(old, state=JournalState.SENDING, idempotency_key=key,
                                sent_at=old.sent_at if old.sent_at is not None else sent_at)

        return await self._write(character_id, change)

    async def mark_sent(self, character_id: str, request_id: str | None,
                        character: Mapping[str, Any] | None = None) -> JournalRecord:
        """The POST got its 2xx (or a check found it landed): the id is charged and is
        only watched from now on. From ``sending`` (or ``pending`` with a recorded key)."""
        _text(request_id, "request_id")
        _character(character)

        def change(old: JournalRecord) -> JournalRecord:
            _expect(old, JournalState.SENDING, JournalState.SENT, JournalState.PENDING)
            if old.idempotency_key is None:
                raise ValueError(f"{old.character_id!r} was never sent: call mark_sending first")
            return attrs.evolve(
                old, state=JournalState.SENT, charged=True,
                request_id=request_id if request_id is not None else old.request_id,
                status=_status_of(character, old.status),
                character=character if character is not None else old.character,
                error_class=None, error_code=None, error_message=None,
            )

        return await self._write(character_id, change)

    async def mark_done(self, character_id: str, status: str,
                        character: Mapping[str, Any]) -> JournalRecord:
        """The watch ended well with ``status`` (``ready``, or ``reviewing`` without
        ``auto_save``) and ``character`` (its JSON). From ``sent`` only."""
        _text(status, "status", optional=False)
        if _character(character) is None:
            raise TypeError("character must be the Character JSON, not None")

        def change(old: JournalRecord) -> JournalRecord:
            _expect(old, JournalState.SENT)
            return attrs.evolve(old, state=JournalState.DONE, status=status,
                                character=character, charged=True)

        return await self._write(character_id, change)

    async def mark_failed(self, character_id: str, *, error_class: str, code: str | None,
                          message: str | None, charged: bool, final: bool,
                          status: str | None = None,
                          character: Mapping[str, Any] | None = None) -> JournalRecord:
        """The id ended with an error that a re-run must not repeat: after the POST's 2xx
        (``charged``, e.g. ``SynthesisFailedError``) or a final 4xx (``final``, e.g. a
        404). A failure that is neither is retryable: use :meth:`mark_pending`.
        A failure after ``sent`` is always recorded as charged."""
        _text(error_class, "error_class", optional=False)
        _text(code, "code")
        _text(message, "message")
        if not isinstance(charged, bool) or not isinstance(final, bool):
            raise TypeError("charged and final must be bools")
        if not (charged or final):
            raise ValueError("a failure neither charged nor final is retryable: use mark_pending")
        _character(character)

        def change(old: JournalRecord) -> JournalRecord:
            _expect(old, JournalState.PENDING, JournalState.SENDING, JournalState.SENT)
            return attrs.evolve(
                old, state=JournalState.FAILED, error_class=error_class, error_code=code,
                error_message=message, charged=charged or old.state is JournalState.SENT,
                final=final, status=status if status is not None else _status_of(
                    character, old.status),
                character=character if character is not None else old.character,
            )

        return await self._write(character_id, change)

    async def mark_pending(self, character_id: str, *, error_class: str | None = None,
                           code: str | None = None,
                           message: str | None = None) -> JournalRecord:
        """The POST ended in a retryable way (connection, timeout, 5xx, 429, 401/403, or
        never sent after a 402): dispatch it again next time, under the recorded key.
        The error, if given, is kept for ``batch show``. From ``pending`` or ``sending``."""
        _text(error_class, "error_class")
        _text(code, "code")
        _text(message, "message")

        def change(old: JournalRecord) -> JournalRecord:
            _expect(old, JournalState.PENDING, JournalState.SENDING)
            return attrs.evolve(old, state=JournalState.PENDING, error_class=error_class,
                                error_code=code, error_message=message)

        return await self._write(character_id, change)

    async def _write(self, character_id: str,
                     change: Callable[[JournalRecord], JournalRecord]) -> JournalRecord:
        if not isinstance(character_id, str):
            raise TypeError(f"character_id must be a str, not {type(character_id).__name__}")
        if self._closed:
            raise JournalError(f"batch {self.name!r} is closed")
        # Shielded, so a cancelled caller cannot leave memory and store disagreeing: the
        # commit (and the in-memory update after it) finishes either way.
        previous = self._inflight.get(character_id)
        task = asyncio.ensure_future(self._commit(character_id, change, previous))
        self._inflight[character_id] = task
        task.add_done_callback(lambda done: self._settled(character_id, done))
        return await asyncio.shield(task)

    async def _commit(self, character_id: str, change: Callable[[JournalRecord], JournalRecord],
                      previous: asyncio.Task[JournalRecord] | None) -> JournalRecord:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its caller's business
        new = change(self._records[character_id])
        new = attrs.evolve(new, updated_at=self.journal.clock.time())
        if self._lease_lost:
            raise LeaseLostError(f"batch {self.name!r} was taken over by another runner")
        try:
            await self.journal._put(self.name, self._owner, new)
        except LeaseLostError:
            self._lease_lost = True
            raise
        self._records[character_id] = new
        return new

    def _settled(self, character_id: str, task: asyncio.Task[JournalRecord]) -> None:
        if self._inflight.get(character_id) is task:
            del self._inflight[character_id]
        # The caller may have been cancelled and never see the outcome; read the
        # exception so asyncio does not report it as never retrieved.
        if not task.cancelled():
            task.exception()

    async def _renew_forever(self) -> None:
        journal = self.journal
        while True:
            await journal.clock.sleep(journal.lease_ttl / 3)
            try:
                held = await journal._renew(self.name, self._owner, journal.clock.time(),
                                            journal.lease_ttl)
            except JournalError as exc:
                # Try again next round; if the store stays away, writes fail anyway.
                logger.warning("could not renew the lease of batch %s: %s", self.name, exc)
                continue
            if not held:
                self._lease_lost = True
                logger.warning("batch %s was taken over by another runner", self.name)
                return

    async def aclose(self) -> None:
        """Stop renewing and release the lease (after writes in flight). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._renewal.cancel()
        await asyncio.gather(self._renewal, return_exceptions=True)
        if self._inflight:  # let writes already started commit before the lease goes
            await asyncio.wait(list(self._inflight.values()))
        self.journal._handles.discard(self)
        if not self._lease_lost:
            await self.journal._release_quietly(self.name, self._owner)

    async def __aenter__(self) -> JournalBatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"JournalBatch({self.name!r}, records={len(self._records)})"


def _expect(record: JournalRecord, *states: JournalState) -> None:
    if record.state not in states:
        allowed = " or ".join(state.value for state in states)
        raise ValueError(f"{record.character_id!r} is {record.state.value}, not {allowed}")


def _status_of(character: Mapping[str, Any] | None, default: str | None) -> str | None:
    status = character.get("status") if character is not None else None
    return status if isinstance(status, str) else default


_J = TypeVar("_J", bound="Journal")


class Journal(Protocol):
    """What ``resynthesize_many(journal=…)`` needs from a journal. Both
    :class:`~aurous_async.SQLiteJournal` and :class:`~aurous_async.RedisJournal` are one.

    Journals are async context managers; :meth:`aclose` is idempotent.
    """

    lease_ttl: float

    async def open_batch(self, batch: str, ids: Iterable[str]) -> JournalBatch:
        """Take the lease on ``batch``, add the new ``ids`` as ``pending``, load the rest."""

    async def read_batch(self, batch: str) -> list[JournalRecord]:
        """Every record of ``batch`` in the order added, without taking its lease."""

    async def batches(self) -> list[str]:
        """The names of the batches in this journal, sorted."""

    async def aclose(self) -> None:
        """Release the leases of open batches and close the store."""

    async def __aenter__(self: _J) -> _J: ...

    async def __aexit__(self, *exc_info: object) -> None: ...
