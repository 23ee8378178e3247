"""The flows of ``session.characters``: following characters (watch, wait) and
resynthesizing them, one or many, built only from the characters endpoints."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from .._batch_journal import BatchJournal, NoJournal
from .._context import deadline_scope
from .._errors import AurousError, WatchTimeoutError
from .._fanout import FanOut
from .._fanout_run import FanOutRun
from .._inflight import InFlight, OwnerLeft, await_joined
from .._journal import check_batch_name
from .._journal_batch import Journal
from .._models import BatchProgress, Character, CharacterStatus, StatusUpdate
from .._parts import SessionParts
from .._ratelimit import estimated_wait
from .._validate import (
    check_bool,
    integer,
    number,
    optional_bool,
    optional_timeout,
    path_id,
    validate_idempotency_key,
)
from .._watch import flow_error, raise_if_failed, watch_character

__all__ = ["TYPICAL_SYNTHESIS", "CharacterFlows"]

#: What a synthesis is assumed to take before a session has seen any (seconds).
TYPICAL_SYNTHESIS = 30.0


class CharacterFlows:
    """The flow methods of :class:`Characters` (see there)."""

    _parts: SessionParts

    if TYPE_CHECKING:
        async def get(self, character_id: str) -> Character: ...

        async def save(self, character_id: str) -> Character: ...

        async def resynthesize(self, character_id: str, *, force_all: bool | None = None,
                               idempotency_key: str | None = None) -> Character: ...

        async def _resynthesize_call(
            self, character_id: str, *, force_all: bool | None, idempotency_key: str | None,
            before_send: Callable[[], Awaitable[None]] | None = None, resumed: bool = False,
        ) -> Character: ...

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = optional_timeout(timeout)
        return None if timeout is None else self._parts.clock.monotonic() + timeout

    def _watch(self, character_id: str, auto_save: bool, deadline: float | None,
               known: Character | None = None) -> AsyncIterator[StatusUpdate]:
        parts = self._parts
        return watch_character(parts.scheduler, self.save, character_id, clock=parts.clock,
                               auto_save=auto_save, deadline=deadline, known=known,
                               leftover_saves=parts.saves)

    def watch(
        self,
        character_id: str,
        *,
        auto_save: bool = False,
        timeout: float | None = None,
        raise_on_failure: bool = False,
    ) -> AsyncIterator[StatusUpdate]:
        """Follow a character: yields its current state, then one update per status
        change, and stops after a terminal one (``ready``, ``failed``, ``deleted``, and
        ``reviewing`` — unless ``auto_save``, which saves it and yields ``ready``).

        Polls go through the session's shared scheduler (watchers of one id share one
        GET) at the session's :class:`PollPolicy`. Past ``timeout`` seconds the
        iterator raises :class:`WatchTimeoutError`. A ``failed`` end is a normal last
        update (``update.failed``); with ``raise_on_failure`` the iterator raises
        :class:`SynthesisFailedError` right after yielding it.

        ::

            async for update in s.characters.watch(character_id, auto_save=True):
                print(update.previous_status, "->", update.status)
        """
        path_id(character_id)
        check_bool(auto_save, "auto_save")
        check_bool(raise_on_failure, "raise_on_failure")
        updates = self._watch(character_id, auto_save, self._deadline(timeout))
        return _raising_on_failure(updates) if raise_on_failure else updates

    async def wait(
        self,
        character_id: str,
        *,
        auto_save: bool = False,
        timeout: float | None = None,
    ) -> Character:
        """Watch a character to its end and return it; raises
        :class:`SynthesisFailedError` if it ends ``failed``.

        ::

            hero = await s.characters.wait(character_id, auto_save=True, timeout=300)
        """
        last: Character | None = None
        async for update in self.watch(character_id, auto_save=auto_save, timeout=timeout):
            last = update.character
        assert last is not None
        return raise_if_failed(last)

    def resynthesize_and_watch(
        self,
        character_id: str,
        *,
        force_all: bool | None = None,
        auto_save: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        raise_on_failure: bool = False,
        min_time_left: float | None = None,
        join: bool = True,
        queued: bool = False,
    ) -> AsyncIterator[StatusUpdate]:
        """:meth:`resynthesize`, then :meth:`watch` — the first update is the
        ``synthesizing`` state the POST returned. ``timeout`` bounds both.

        * ``min_time_left``: when the time left before ``timeout`` cannot cover a typical
          synthesis (this session's learned duration, or 30 s before it has one), the
          paid call is not sent and :class:`WatchTimeoutError` says it was not charged;
          this sets the margin in seconds (``0`` switches the guard off).
        * ``join``: if this session already has a resynthesize of this character in
          flight, follow that one instead of paying for another (``join=False`` sends
          one call per request, as :meth:`resynthesize` does).
        * ``raise_on_failure``: as in :meth:`watch`.
        * ``queued``: first yield a ``queued`` update at once, with the estimated wait for
          the rate-limit token, before the paid call is sent — so a streaming endpoint can
          send its first byte immediately.

        ::

            async for update in s.characters.resynthesize_and_watch(cid, auto_save=True):
                print(update.status)
        """
        path_id(character_id)
        check_bool(auto_save, "auto_save")
        check_bool(raise_on_failure, "raise_on_failure")
        check_bool(join, "join")
        check_bool(queued, "queued")
        optional_bool(force_all, "force_all")
        validate_idempotency_key(idempotency_key)
        margin = None if min_time_left is None else number(min_time_left, "min_time_left",
                                                            minimum=0)
        updates = self._resynthesize_and_watch(
            character_id, force_all, auto_save, self._deadline(timeout), idempotency_key,
            margin, join, queued,
        )
        return _raising_on_failure(updates) if raise_on_failure else updates

    async def _resynthesize_and_watch(
        self,
        character_id: str,
        force_all: bool | None,
        auto_save: bool,
        deadline: float | None,
        idempotency_key: str | None,
        min_time_left: float | None,
        join: bool,
        queued: bool,
    ) -> AsyncIterator[StatusUpdate]:
        if queued:
            yield StatusUpdate(
                character=Character(id=character_id, status=CharacterStatus("queued")),
                status=CharacterStatus("queued"), previous_status=None, terminal=False,
                polls=0, elapsed=0.0,
                estimated_wait=estimated_wait(self._parts.limiter, "characters_synthesize"))
        inflight, key, resumed = self._parts.inflight, idempotency_key, False
        while True:
            entry = inflight.get(character_id) if join else None
            owner = entry is None
            if entry is None:
                self._check_time_left(character_id, deadline, min_time_left)
                entry = InFlight(key or str(uuid.uuid4()))
                if join:
                    inflight.claim_entry(character_id, entry)
            try:
                if owner:
                    await self._post_for(entry, character_id, force_all, deadline, resumed)
                try:
                    character = await await_joined(entry, self._parts.clock, deadline)
                except OwnerLeft as left:
                    # Its caller went away: take the call over, under the same key.
                    key, resumed = left.key, True
                    continue
                async for update in self._watch(character_id, auto_save, deadline, character):
                    yield update
                return
            finally:
                if owner:
                    inflight.release(character_id, entry)

    async def _post_for(self, entry: InFlight, character_id: str, force_all: bool | None,
                        deadline: float | None, resumed: bool) -> None:
        """Send the resynthesize of ``entry`` and settle it for whoever joined."""
        try:
            with deadline_scope(deadline):
                character = await self._resynthesize_call(
                    character_id, force_all=force_all, idempotency_key=entry.key,
                    resumed=resumed)
        except AurousError as exc:
            entry.settle(error=flow_error(exc))
        except BaseException:
            # Cancelled (a client went away): whoever joined takes over, same key.
            entry.settle(error=OwnerLeft(entry.key))
            raise
        else:
            entry.settle(character)

    def _check_time_left(self, character_id: str, deadline: float | None,
                         margin: float | None) -> None:
        if deadline is None:
            return
        if margin is None:
            margin = self._parts.scheduler.estimate.value or TYPICAL_SYNTHESIS
        left = deadline - self._parts.clock.monotonic()
        if margin and left < margin:
            raise WatchTimeoutError(
                f"{character_id} was not resynthesized (not charged): {left:.0f}s left of "
                f"the timeout cannot cover a typical synthesis of {margin:.0f}s "
                "(min_time_left=0 sends it anyway)")

    def resynthesize_many(
        self,
        ids: Iterable[str],
        *,
        force_all: bool | None = None,
        auto_save: bool = False,
        timeout: float | None = None,
        concurrency: int | None = None,
        progress: Callable[[BatchProgress], None] | None = None,
        journal: Journal | None = None,
        batch: str | None = None,
        min_time_left: float | None = None,
    ) -> FanOut:
        """Resynthesize many characters and yield a :class:`BatchResult` for each as it
        completes.

        Calls go out in the order given, paced by the ``characters_synthesize`` bucket;
        ``concurrency`` caps POSTs in flight (default: the connection pool). The first
        402 stops dispatching: every id not yet sent comes back with that
        :class:`InsufficientCreditsError`. One character's failure never stops the
        others; a transient failure (an outage, 5xx, 429) is waited out within
        ``timeout``, which bounds the whole batch.

        A new paid POST goes out only while you wait for the next result, so a loop you
        leave early (or an iterator you stop reading) charges nothing more. Use it as an
        async context manager to also cancel the calls and polls in flight on exit.
        ``progress`` is called with a :class:`BatchProgress` on every change (an
        exception it raises ends the batch and reaches you).

        Near the end of ``timeout``, no POST is sent whose synthesis could not finish in
        the time left (see ``min_time_left`` in :meth:`resynthesize_and_watch`): those ids
        come back with a :class:`WatchTimeoutError` saying they were not charged.

        With a ``journal`` (:class:`SQLiteJournal`, :class:`RedisJournal`) and a ``batch``
        name, the run is exactly-once across restarts: running the same call again
        resumes it, charging no id twice (see "Long batches and restarts" in the README).

        ::

            async with s.characters.resynthesize_many(ids, auto_save=True) as batch:
                async for result in batch:
                    print(result.character_id, "ok" if result.ok else result.error)
        """
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise TypeError("ids must be an iterable of character ids")
        id_list = list(ids)
        for character_id in id_list:
            path_id(character_id)
        if len(set(id_list)) != len(id_list):
            raise ValueError("ids must not repeat (each would be charged twice)")
        check_bool(auto_save, "auto_save")
        optional_bool(force_all, "force_all")
        if concurrency is not None:
            integer(concurrency, "concurrency", minimum=1)
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        if (journal is None) != (batch is None):
            raise ValueError("give journal and batch together (batch names the run in the "
                             "journal)")
        margin = None if min_time_left is None else number(min_time_left, "min_time_left",
                                                            minimum=0)
        parts = self._parts
        recorder = NoJournal()
        if journal is not None:
            if not callable(getattr(journal, "open_batch", None)):
                raise TypeError("journal must be a SQLiteJournal, a RedisJournal or another "
                                "Journal")
            recorder = BatchJournal(journal, check_batch_name(batch), parts.clock)
        return FanOut(FanOutRun(
            id_list, resynthesize=self._resynthesize_call, get=self.get, save=self.save,
            scheduler=parts.scheduler, journal=recorder,
            clock=parts.clock, force_all=force_all, auto_save=auto_save,
            timeout=optional_timeout(timeout),  # the batch starts its clock when iterated
            concurrency=concurrency or parts.connection_limit, progress=progress,
            batches=parts.batches,
            min_time_left=margin if margin is not None
            else parts.scheduler.estimate.value or TYPICAL_SYNTHESIS,
            leftover_saves=parts.saves, inflight=parts.inflight,
        ))


async def _raising_on_failure(updates: AsyncIterator[StatusUpdate]) -> AsyncIterator[StatusUpdate]:
    """``updates``, then :class:`SynthesisFailedError` after a ``failed`` last update."""
    async for update in updates:
        yield update
        if update.terminal:
            raise_if_failed(update.character)
