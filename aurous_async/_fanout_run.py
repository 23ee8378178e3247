"""The engine of one ``resynthesize_many`` run (see :mod:`aurous_async._fanout`)."""

from __future__ import annotations

import asyncio
import collections
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from ._batch_journal import NoJournal, Plan, Step
from ._clock import Clock
from ._context import deadline_scope, notify_on_token
from ._errors import (
    AurousError,
    IdempotencyKeyInUseError,
    InsufficientCreditsError,
    NotFoundError,
    SessionClosedError,
    SynthesisFailedError,
    WatchTimeoutError,
)
from ._inflight import InFlight, InFlightTable, OwnerLeft, await_joined
from ._journal import JournalError
from ._models import BatchProgress, BatchResult, Character, CharacterStatus
from ._polling import PollScheduler
from ._watch import BackgroundSaves, flow_error, is_transient, watch_character

__all__ = ["FanOutRun"]

#: Without a batch timeout, an outage is waited out this long before ids are failed.
OUTAGE_BUDGET = 600.0
_BACKOFF_START, _BACKOFF_CAP = 1.0, 30.0


Resynthesize = Callable[..., Awaitable[Character]]


class FanOutRun:
    """The engine of one :class:`FanOut`."""

    def __init__(
        self,
        ids: Sequence[str],
        *,
        resynthesize: Resynthesize,
        get: Callable[[str], Awaitable[Character]],
        save: Callable[[str], Awaitable[Character]],
        scheduler: PollScheduler,
        clock: Clock,
        force_all: bool | None,
        auto_save: bool,
        timeout: float | None,
        concurrency: int,
        progress: Callable[[BatchProgress], None] | None,
        batches: set[Callable[[], None]],
        journal: NoJournal,
        min_time_left: float,
        leftover_saves: BackgroundSaves,
        inflight: InFlightTable,
    ) -> None:
        self._ids = list(ids)
        self._resynthesize = resynthesize
        self._get = get
        self._save = save
        self._journal = journal
        self._min_time_left = min_time_left
        self._leftover_saves = leftover_saves
        self._inflight = inflight
        # A journaled batch keeps to its own recorded keys: it never joins others' calls.
        self._joins = type(journal) is NoJournal
        self._plans: dict[str, Plan] = {}
        self._sent: set[str] = set()  # ids whose POST has its token: on its way
        self._last: dict[str, Character] = {}  # the last state seen of each charged id
        self._scheduler = scheduler
        self._clock = clock
        self._force_all = force_all
        self._auto_save = auto_save
        self._timeout = timeout
        self._progress = progress
        self._batches = batches
        self._slots = asyncio.Semaphore(concurrency)
        self._queue = collections.deque(self._ids)  # not dispatched yet, in order
        self._unfinished = set(self._ids)
        self._results: collections.deque[BatchResult] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        # The call waiting for its rate-limit token: (id, its task, token granted).
        self._waiting_token: tuple[str, asyncio.Task[None], asyncio.Future[None]] | None = None
        self._stop: AurousError | None = None  # dispatching ended (402, deadline, closed)
        self._fatal: BaseException | None = None
        self._deadline: float | None = None
        self._started = self._closed = False
        self._counts = dict(dispatched=0, synthesizing=0, done=0, failed=0, charged=0)

    # -- the consumer's side ---------------------------------------------------------------

    async def next(self) -> BatchResult:
        if not self._started:
            await self._start()
        while not self._results:
            if self._fatal is not None:
                await self.aclose()
                raise self._fatal
            if not self._unfinished or self._closed:
                await self.aclose()
                raise StopAsyncIteration
            self._resume_dispatch()
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            except BaseException:
                # The consumer was cancelled (a web client went away): end it all, as
                # the finally of an async generator would.
                await self.aclose()
                raise
            finally:
                self._wakeup = None
                self._pause_dispatch()
        return self._results.popleft()

    def cancel(self) -> None:
        """End every task of this run now (without waiting for them)."""
        self._closed = True
        self._batches.discard(self._shutdown)
        for task in (self._dispatcher, *self._tasks):
            if task is not None:
                task.cancel()
        self._journal.abandon()

    async def aclose(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        self._closed = True
        self._batches.discard(self._shutdown)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._journal.close()

    # -- dispatch ------------------------------------------------------------------------

    async def _start(self) -> None:
        self._started = True
        if self._timeout is not None:
            self._deadline = self._clock.monotonic() + self._timeout
        # Opening the journal takes the batch's lease and reads what earlier runs did:
        # a journal that cannot be used raises here, before anything is sent.
        self._plans = await self._journal.open(self._ids)
        self._batches.add(self._shutdown)
        self._queue.clear()
        for character_id in self._ids:
            plan = self._plans[character_id]
            if plan.step is Step.DONE:
                assert plan.result is not None
                self._finish(plan.result)
            elif plan.step is Step.WATCH:
                # Charged in an earlier life: only watched (GETs), never POSTed again.
                self._counts["synthesizing"] += 1
                self._counts["charged"] += 1
                self._spawn(self._watch(character_id, None), "resynthesize_many watch")
            else:
                self._queue.append(character_id)
        self._report()

    def _resume_dispatch(self) -> None:
        if self._dispatcher is None and self._queue and self._stop is None:
            self._dispatcher = self._spawn(self._dispatch(), "resynthesize_many dispatch")

    def _pause_dispatch(self) -> None:
        """The consumer stopped waiting: send nothing more until it waits again. A call
        still queued for its token is taken back (it has spent nothing)."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            self._dispatcher = None
        if self._waiting_token is not None and not self._waiting_token[2].done():
            character_id, task, _ = self._waiting_token
            self._waiting_token = None
            task.cancel()
            self._queue.appendleft(character_id)
            self._counts["dispatched"] -= 1

    async def _dispatch(self) -> None:
        while self._queue and self._stop is None:
            await self._slots.acquire()
            if self._stop is not None:
                self._slots.release()
                break
            if self._too_late():
                self._slots.release()
                break
            character_id = self._queue.popleft()
            has_token: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            slot = _Slot(self._slots)  # given back also if the call is cancelled unstarted
            task = self._spawn(self._follow(character_id, has_token, slot),
                               "resynthesize_many call")
            task.add_done_callback(slot.release)
            self._waiting_token = (character_id, task, has_token)
            self._counts["dispatched"] += 1
            await asyncio.wait({has_token, task}, return_when=asyncio.FIRST_COMPLETED)
            self._waiting_token = None
        self._dispatcher = None
        if self._stop is not None:
            self._fail_unsent(self._stop)

    def _too_late(self) -> bool:
        """Whether the batch's time left cannot cover a typical synthesis: then nothing
        more is sent (and charged) only to time out."""
        left = math.inf if self._deadline is None else self._deadline - self._clock.monotonic()
        if left >= self._min_time_left:
            return False
        self._stop = self._stop or WatchTimeoutError(
            f"not sent (not charged): {left:.0f}s left of the batch's timeout cannot cover "
            f"a typical synthesis of {self._min_time_left:.0f}s")
        return True

    def _fail_unsent(self, error: AurousError) -> None:
        while self._queue:
            self._finish(BatchResult(character_id=self._queue.popleft(), error=error))

    async def _follow(self, character_id: str, has_token: asyncio.Future[None],
                      slot: _Slot) -> None:
        """POST one resynthesize (retrying transient failures with the same key), then
        watch it to its end."""
        def token_granted() -> None:
            if not has_token.done():
                has_token.set_result(None)
                self._sent.add(character_id)
                self._report(character_id, "dispatched")

        plan = self._plans[character_id]
        if plan.key is None:
            # Minted once per id (or read from the journal): every retry, and a dispatch
            # taken back and made again, reuses it.
            plan = self._plans[character_id] = attrs.evolve(plan, key=str(uuid.uuid4()))
            fresh = True
        else:
            fresh = False
        assert plan.key is not None
        key = plan.key
        entry: InFlight | None = None
        try:
            character: Character | None = None
            joined = self._inflight.get(character_id) if self._joins else None
            if joined is not None:
                # This session resynthesizes it already (a flow, another batch): follow
                # that call instead of paying again; if its caller left, take it over.
                try:
                    character = await await_joined(joined, self._clock, self._deadline,
                                                   token_granted)
                except OwnerLeft as left:
                    key, fresh = left.key, False
            if character is None:
                entry = InFlight(key)
                if self._joins:
                    self._inflight.claim_entry(character_id, entry)
                character = await self._owned_post(entry, character_id, plan, token_granted,
                                                   fresh)
        except JournalError:
            raise  # the journal is unusable: the run ends with it (see _task_done)
        except AurousError as exc:
            if entry is not None:
                self._inflight.release(character_id, entry)
            if isinstance(exc, InsufficientCreditsError) or not has_token.done():
                # Out of credits, or out of time before a token: the rest share the fate.
                self._stop = self._stop or exc
            self._counts["dispatched"] -= 1
            result = BatchResult(character_id=character_id, error=flow_error(exc))
            await self._journal.ended(result, charged=False)
            self._finish(result)
            if self._stop is not None:
                self._fail_unsent(self._stop)
            return
        except BaseException:
            # Cancelled (the consumer paused or left): the entry, settled for any joiner,
            # leaves the session's table, so nothing later joins a call nobody owns.
            if entry is not None:
                self._inflight.release(character_id, entry)
            raise
        finally:
            slot.release()  # the next POST may go while this one is watched
        self._counts["dispatched"] -= 1
        self._counts["synthesizing"] += 1
        self._counts["charged"] += 1
        self._last[character_id] = character
        try:
            await self._journal.sent(character)
            await self._watch(character_id, character)
        finally:
            if entry is not None:
                self._inflight.release(character_id, entry)

    async def _owned_post(self, entry: InFlight, character_id: str, plan: Plan,
                          token_granted: Callable[[], None], fresh: bool) -> Character:
        """Our own POST for ``entry``, settled for whoever joins it meanwhile."""
        try:
            character = await self._check_then_post(character_id, entry.key, plan,
                                                    token_granted, fresh=fresh)
        except AurousError as exc:
            entry.settle(error=flow_error(exc))
            raise
        except BaseException:
            entry.settle(error=OwnerLeft(entry.key))  # a joiner takes over, same key
            raise
        entry.settle(character)
        return character

    async def _check_then_post(self, character_id: str, key: str, plan: Plan,
                               token_granted: Callable[[], None], *, fresh: bool) -> Character:
        if plan.step is Step.CHECK_THEN_POST and plan.sent_at is not None:
            # The recorded key may have expired on the server: if the character changed
            # after that send, the POST went through; a second one could charge again.
            with deadline_scope(self._deadline):
                character = await self._get(character_id)
            changed = character.updated_at is not None \
                and character.updated_at.timestamp() >= plan.sent_at
            if changed or character.status == CharacterStatus.SYNTHESIZING:
                token_granted()
                return character
        return await self._post(character_id, key, token_granted, resumed=not fresh)

    async def _post(self, character_id: str, key: str, token_granted: Callable[[], None],
                    *, resumed: bool) -> Character:
        wait, started, tries = _BACKOFF_START, self._clock.monotonic(), 0

        async def write_ahead() -> None:
            await self._journal.sending(character_id, key)

        while True:
            notify_on_token(token_granted)
            tries += 1
            try:
                with deadline_scope(self._deadline):
                    return await self._resynthesize(
                        character_id, force_all=self._force_all, idempotency_key=key,
                        before_send=write_ahead, resumed=resumed or tries > 1)
            except AurousError as exc:
                budget_end = self._deadline if self._deadline is not None \
                    else started + OUTAGE_BUDGET
                # A 409 for our key on a repeat means our own earlier POST still runs.
                ours = tries > 1 and isinstance(exc, IdempotencyKeyInUseError)
                if not (ours or is_transient(exc)) or self._clock.monotonic() + wait > budget_end:
                    raise
            await self._clock.sleep(wait)
            wait = min(wait * 2, _BACKOFF_CAP)

    async def _watch(self, character_id: str, character: Character | None) -> None:
        last = character
        result: BatchResult
        try:
            async for update in watch_character(
                self._scheduler, self._save, character_id, clock=self._clock,
                auto_save=self._auto_save, deadline=self._deadline, known=character,
                leftover_saves=self._leftover_saves,
            ):
                last = self._last[character_id] = update.character
                self._report(character_id, update.status.value)
        except AurousError as exc:
            result = BatchResult(character_id=character_id,
                                 character=getattr(exc, "character", None) or last, error=exc)
        else:
            assert last is not None
            error: AurousError | None = None
            if last.status == CharacterStatus.FAILED:
                error = SynthesisFailedError(last)
            elif last.status == CharacterStatus.DELETED:
                error = NotFoundError(f"{character_id} was deleted during the batch",
                                      status=404, code="character_deleted")
            result = BatchResult(character_id=character_id, character=last, error=error)
        self._counts["synthesizing"] -= 1
        # Committed before it is yielded: a crash after this never loses the outcome.
        await self._journal.ended(result, charged=True)
        self._finish(result)

    # -- results, errors, progress -------------------------------------------------------

    def _finish(self, result: BatchResult) -> None:
        if result.character_id not in self._unfinished:
            return  # already reported (the session closed under it)
        self._unfinished.discard(result.character_id)
        self._counts["done" if result.ok else "failed"] += 1
        self._results.append(result)
        self._report(result.character_id, "done" if result.ok else "failed")
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _report(self, character_id: str | None = None, state: str | None = None) -> None:
        if self._progress is None or self._fatal is not None:
            return
        counts = self._counts
        try:
            self._progress(BatchProgress(
                total=len(self._ids), queued=len(self._queue), dispatched=counts["dispatched"],
                synthesizing=counts["synthesizing"], done=counts["done"],
                failed=counts["failed"], charged=counts["charged"],
                gets=self._scheduler.polls_sent, character_id=character_id, state=state,
            ))
        except Exception as exc:
            self._fatal = exc
            self._wake()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"aurous-async {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            # Not a result: a journal that failed, a bug or a third-party part.
            self._fatal = task.exception()
            self._wake()

    def _shutdown(self) -> None:
        """The session is closing: end every call and report what is left."""
        for task in (self._dispatcher, *self._tasks):
            if task is not None:
                task.cancel()
        self._queue.clear()
        for character_id in [c for c in self._ids if c in self._unfinished]:
            sent = character_id in self._sent
            error = SessionClosedError(
                f"the session was closed during resynthesize_many; {character_id} "
                + ("was sent, so it may have been charged: retry with the same "
                   f"idempotency_key={self._plans[character_id].key!r}" if sent
                   else "was not sent (not charged)"))
            error.idempotency_key = self._plans[character_id].key if sent else None
            error.may_have_been_processed = sent
            self._finish(BatchResult(character_id=character_id, error=error,
                                     character=self._last.get(character_id)))
        self._closed = True


class _Slot:
    """One call's place under ``concurrency``, given back once, whichever path is first."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self, _done: object = None) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()
