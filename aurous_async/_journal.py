"""Durable batches: what a journal records per (batch, character id), and how a resumed
batch decides what to do with each id.

A journal makes a long ``resynthesize_many`` exactly-once per character across restarts
(design §4). Each id moves through::

    pending ──► sending ──► sent ──► done
       ▲  │        │          │
       └──┴────────┘          └────► failed     (also from pending/sending when final)

``sending`` is written *before* the POST leaves (write-ahead, with its Idempotency-Key),
``sent`` after its 2xx, ``done``/``failed`` when the watch ends. Every write is committed
before the call that makes it returns, so a crash at any instant leaves a consistent
journal, and :func:`resume_action` says what the next life does with each record.

One runner at a time holds a batch: :meth:`Journal.open_batch` takes a lease, renews it in
the background, and every write is fenced by it (a runner whose lease was taken over gets
:class:`LeaseLostError` instead of overwriting the new runner's records).

Two stores ship: :class:`~aurous_async.SQLiteJournal` (one file, one machine) and
:class:`~aurous_async.RedisJournal` (a fleet).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import AurousError

__all__ = [
    "KEY_REUSE_LIMIT",
    "BatchInUseError",
    "JournalError",
    "JournalRecord",
    "JournalState",
    "LeaseLostError",
    "ResumeAction",
    "resume_action",
]

#: Seconds after its first send within which a recorded Idempotency-Key is still trusted
#: to replay. The API keeps keys 24 h; an hour of margin covers clock skew and slow runs.
KEY_REUSE_LIMIT = 23 * 3600.0

_BATCH_NAME = re.compile(r"[\x21-\x7e]{1,200}")


class JournalError(AurousError):
    """The journal cannot be opened, read or written (unwritable path, corrupt or foreign
    file, a newer schema, Redis down). Raised before any paid request of the affected id."""


class LeaseLostError(JournalError):
    """Another runner took this batch over (our lease lapsed); this runner must stop.

    Raised by a write instead of overwriting the other runner's records.
    """


class BatchInUseError(AurousError):
    """Another live runner holds the batch. ``expires_in`` is the number of seconds its
    lease has left unless renewed; a runner that died stops renewing, so the batch can be
    taken over after that."""

    def __init__(self, batch: str, expires_in: float) -> None:
        self.batch = batch
        self.expires_in = max(0.0, float(expires_in))
        super().__init__(
            f"batch {batch!r} is being run by another runner; its lease expires in "
            f"{self.expires_in:.1f}s unless renewed"
        )


class JournalState(str, enum.Enum):
    """Where one id of a batch is. ``done`` and ``failed`` are final."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


def _character_repr(character: Mapping[str, Any] | None) -> str:
    # The character JSON holds signed ref URLs (token=…): never in a repr.
    return "None" if character is None else "{…}"


@attrs.frozen(kw_only=True)
class JournalRecord:
    """What the journal knows about one character id of a batch.

    ``idempotency_key`` and ``sent_at`` (Unix time of the first send under that key) are
    written before the POST leaves; ``request_id`` is the POST's ``Aurous-Request-Id``.
    ``status`` and ``character`` (the last ``Character`` JSON seen) describe the outcome,
    or ``error_class``/``error_code``/``error_message`` the last error. A ``failed`` record
    is ``charged`` when its POST got a 2xx first, and ``final`` when a 4xx ended it.
    ``updated_at`` is the Unix time of the last write.
    """

    character_id: str
    state: JournalState
    idempotency_key: str | None = None
    sent_at: float | None = None
    request_id: str | None = None
    status: str | None = None
    character: Mapping[str, Any] | None = attrs.field(
        default=None, repr=_character_repr, hash=False
    )
    error_class: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    charged: bool = False
    final: bool = False
    updated_at: float = 0.0


class ResumeAction(enum.Enum):
    """What a resumed batch does with one record (see :func:`resume_action`)."""

    #: Yield the recorded outcome (``from_journal=True``); send nothing.
    FROM_JOURNAL = "from_journal"
    #: The POST got its 2xx: watch the character (GETs only), never POST again.
    WATCH = "watch"
    #: Written ahead, no answer seen: POST again under the recorded key (the server
    #: replays if the first one arrived; a 409 ``idempotency_key_in_use`` means it is
    #: still running).
    POST_WITH_RECORDED_KEY = "post_with_recorded_key"
    #: The recorded key may have expired on the server: GET the character first; if it
    #: changed after ``sent_at`` (later ``updated_at``, or ``synthesizing``), treat the
    #: record as sent, else POST under the recorded key.
    CHECK_THEN_POST = "check_then_post"
    #: Not sent (or sent and answered with a retryable error): dispatch as usual,
    #: reusing ``idempotency_key`` when one is recorded.
    DISPATCH = "dispatch"


def resume_action(record: JournalRecord, *, now: float) -> ResumeAction:
    """What a resumed batch does with ``record`` at Unix time ``now`` (design §4).

    >>> resume_action(JournalRecord(character_id="c", state=JournalState.SENT), now=0)
    <ResumeAction.WATCH: 'watch'>

    A recorded key older than :data:`KEY_REUSE_LIMIT` may be unknown to the server, so a
    POST under it could charge a second time: such a ``sending`` record — and a
    ``pending`` one whose last send had no clear answer — is checked first.
    """
    state = record.state
    if state is JournalState.DONE:
        return ResumeAction.FROM_JOURNAL
    if state is JournalState.FAILED:
        # mark_failed only records charged or final failures; anything else stays pending.
        return ResumeAction.FROM_JOURNAL
    if state is JournalState.SENT:
        return ResumeAction.WATCH
    stale = record.sent_at is not None and now - record.sent_at > KEY_REUSE_LIMIT
    if state is JournalState.SENDING:
        return ResumeAction.CHECK_THEN_POST if stale else ResumeAction.POST_WITH_RECORDED_KEY
    return ResumeAction.CHECK_THEN_POST if stale else ResumeAction.DISPATCH


def check_batch_name(batch: object) -> str:
    """``batch`` if it is 1–200 printable ASCII characters without spaces."""
    if not isinstance(batch, str):
        raise TypeError(f"batch must be a str, not {type(batch).__name__}")
    if not _BATCH_NAME.fullmatch(batch):
        raise ValueError("batch must be 1-200 printable ASCII characters, no spaces")
    return batch


def check_ids(ids: object) -> list[str]:
    """``ids`` as a list without repeats (first occurrence kept)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError("ids must be an iterable of str (not a single str)")
    result: dict[str, None] = {}
    for character_id in ids:
        if not isinstance(character_id, str):
            raise TypeError(f"character ids must be str, not {type(character_id).__name__}")
        if not 0 < len(character_id) <= 256 or not character_id.isprintable():
            raise ValueError(f"not a valid character id: {character_id[:40]!r}")
        result[character_id] = None
    return list(result)
