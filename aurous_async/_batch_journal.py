"""The fan-out's side of a journal: what to do with each id of a resumed batch, and the
writes that make each step durable before the next one happens.

With no journal, :class:`NoJournal` stands in and every id is simply dispatched.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from typing import Any

import attrs

from ._clock import Clock
from ._convert import converter, decode
from ._errors import (
    APIStatusError,
    AurousError,
    AuthenticationError,
    DeadlineExceededError,
    InsufficientCreditsError,
    PermissionDeniedError,
    SessionClosedError,
    SynthesisFailedError,
)
from ._journal import JournalRecord, ResumeAction, resume_action
from ._journal_batch import Journal, JournalBatch
from ._models import BatchResult, Character
from ._polling import is_transient

__all__ = ["BatchJournal", "NoJournal", "Plan", "Step"]


class Step(enum.Enum):
    """What the fan-out does with one id."""

    DISPATCH = "dispatch"  # POST (with ``key`` when one is recorded), then watch
    RESUME_POST = "resume_post"  # POST again under the recorded key: it may still run
    CHECK_THEN_POST = "check_then_post"  # GET first: sent already, or POST under the key
    WATCH = "watch"  # charged in an earlier life: GETs only
    DONE = "done"  # finished in an earlier life: yield ``result``


@attrs.frozen
class Plan:
    step: Step
    key: str | None = None
    sent_at: float | None = None
    result: BatchResult | None = None


class NoJournal:
    """No journal: every id is new, and nothing is written."""

    async def open(self, ids: Sequence[str]) -> dict[str, Plan]:
        return {character_id: Plan(Step.DISPATCH) for character_id in ids}

    async def sending(self, character_id: str, key: str) -> None:
        return None

    async def sent(self, character: Character) -> None:
        return None

    async def ended(self, result: BatchResult, *, charged: bool) -> None:
        return None

    async def close(self) -> None:
        return None

    def abandon(self) -> None:
        return None


class BatchJournal(NoJournal):
    """One batch of a :class:`Journal`, held (leased) while the fan-out runs."""

    def __init__(self, journal: Journal, name: str, clock: Clock) -> None:
        self._journal = journal
        self._name = name
        self._clock = clock
        self._batch: JournalBatch | None = None

    async def open(self, ids: Sequence[str]) -> dict[str, Plan]:
        """Take the batch's lease and plan every id (raises ``BatchInUseError`` or
        ``JournalError`` before anything is sent)."""
        self._batch = batch = await self._journal.open_batch(self._name, ids)
        now = self._clock.time()
        return {character_id: _plan(batch.record(character_id), now) for character_id in ids}

    async def sending(self, character_id: str, key: str) -> None:
        assert self._batch is not None
        await self._batch.mark_sending(character_id, key, self._clock.time())

    async def sent(self, character: Character) -> None:
        assert self._batch is not None
        await self._batch.mark_sent(character.id, character.request_id,
                                    _json(character))

    async def ended(self, result: BatchResult, *, charged: bool) -> None:
        """Commit how ``result``'s id ended; retryable failures stay ``pending``."""
        batch = self._batch
        assert batch is not None
        error, character = result.error, result.character
        if error is None and character is not None:
            await batch.mark_done(result.character_id, str(character.status), _json(character))
            return
        assert error is not None
        if charged and _retry_later(error) and not isinstance(error, SynthesisFailedError):
            # The watch ended early (timeout, closing, an outage): the record stays
            # `sent`, so a resumed batch watches it again instead of calling it failed.
            return
        code = error.code if isinstance(error, APIStatusError) else None
        name, message = type(error).__name__, str(error)[:500]
        if charged or isinstance(error, SynthesisFailedError):
            await batch.mark_failed(result.character_id, error_class=name, code=code,
                                    message=message, charged=True, final=False,
                                    status=str(character.status) if character else None,
                                    character=_json(character) if character else None)
        elif _retry_later(error):
            await batch.mark_pending(result.character_id, error_class=name, code=code,
                                     message=message)
        else:
            await batch.mark_failed(result.character_id, error_class=name, code=code,
                                    message=message, charged=False, final=True)

    async def close(self) -> None:
        if self._batch is not None:
            batch, self._batch = self._batch, None
            await batch.aclose()

    def abandon(self) -> None:
        """Close without awaiting (the run is being torn down, maybe by the garbage
        collector): the batch's lease is released in the background."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(batch.aclose())
        except RuntimeError:
            return  # no loop left: the lease lapses after its ttl
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


# Background closes of abandoned batches, held so they are not collected half-way.
_CLOSING: set[asyncio.Task[None]] = set()


def _retry_later(error: AurousError) -> bool:
    """Errors a re-run should send again: transient ones, a key problem fixed since (401,
    403), unsent after a 402, cut off by the deadline or by closing."""
    return is_transient(error) or isinstance(error, (
        AuthenticationError, PermissionDeniedError, InsufficientCreditsError,
        DeadlineExceededError, SessionClosedError))


def _json(character: Character) -> dict[str, Any]:
    data: dict[str, Any] = converter.unstructure(character)
    data.pop("request_id", None)
    return data


def _plan(record: JournalRecord, now: float) -> Plan:
    action = resume_action(record, now=now)
    if action is ResumeAction.FROM_JOURNAL:
        return Plan(Step.DONE, result=_recorded_result(record))
    if action is ResumeAction.WATCH:
        return Plan(Step.WATCH)
    if action is ResumeAction.POST_WITH_RECORDED_KEY:
        return Plan(Step.RESUME_POST, key=record.idempotency_key, sent_at=record.sent_at)
    if action is ResumeAction.CHECK_THEN_POST:
        return Plan(Step.CHECK_THEN_POST, key=record.idempotency_key, sent_at=record.sent_at)
    return Plan(Step.DISPATCH, key=record.idempotency_key)


def _recorded_result(record: JournalRecord) -> BatchResult:
    character: Character | None = None
    if record.character is not None:
        try:
            character = decode(dict(record.character), Character)
        except ValueError:
            character = None  # an unreadable record still reports its outcome
    error: AurousError | None = None
    if record.state.value == "failed":
        error = RecordedError(record)
    return BatchResult(character_id=record.character_id, character=character, error=error,
                       from_journal=True)


class RecordedError(AurousError):
    """How an id ended in an earlier run of its batch, as the journal recorded it:
    ``error_class``, ``code`` and the message of the original error."""

    def __init__(self, record: JournalRecord) -> None:
        self.error_class = record.error_class
        self.code = record.error_code
        self.charged = record.charged
        super().__init__(f"{record.error_class or 'error'} in an earlier run: "
                         f"{record.error_message or ''}".rstrip(": "))
