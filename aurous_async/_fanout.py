"""``resynthesize_many``: start many resynthesizes and follow each to its end.

Dispatch is sequential at the rate limiter: one call at a time waits for a
``characters_synthesize`` token, so the bucket serves ids in the order given, and when a
402 says the credits ran out, every id not yet sent is reported unsent — none is sent
after it. Sent calls are followed through the session's shared poll scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import (
    AurousError,
    InsufficientCreditsError,
    SessionClosedError,
    SynthesisFailedError,
)
from ._models import BatchResult, Character, CharacterStatus
from ._polling import watch_character
from ._transport import deadline_scope, on_token

if TYPE_CHECKING:
    from .resources.characters import Characters

__all__ = ["BatchProgress", "resynthesize_many"]


@attrs.frozen(kw_only=True)
class BatchProgress:
    """Counts of one ``resynthesize_many`` run, passed to its ``progress`` callback.

    ``queued`` are not sent yet, ``dispatched`` have their POST in flight,
    ``synthesizing`` are being watched, ``done`` ended well and ``failed`` with an error
    (undispatched ones after a 402 included). ``gets`` counts the session's polls.
    ``character_id`` and ``state`` say what just changed (``None`` on the first call):
    ``state`` is ``"dispatched"``, a status value such as ``"synthesizing"`` or
    ``"reviewing"``, ``"done"`` or ``"failed"``.
    """

    total: int
    queued: int
    dispatched: int
    synthesizing: int
    done: int
    failed: int
    gets: int
    character_id: str | None = None
    state: str | None = None


@attrs.define
class _Run:
    """The mutable state of one batch."""

    total: int
    progress: Callable[[BatchProgress], None] | None
    gets: Callable[[], int]
    queued: int = 0
    dispatched: int = 0
    synthesizing: int = 0
    done: int = 0
    failed: int = 0
    results: asyncio.Queue[BatchResult] = attrs.Factory(asyncio.Queue)
    stop: asyncio.Future[AurousError] | None = None
    unfinished: set[str] = attrs.Factory(set)

    def report(self, character_id: str | None = None, state: str | None = None) -> None:
        if self.progress is not None:
            self.progress(BatchProgress(
                total=self.total, queued=self.queued, dispatched=self.dispatched,
                synthesizing=self.synthesizing, done=self.done, failed=self.failed,
                gets=self.gets(), character_id=character_id, state=state,
            ))

    def finish(self, result: BatchResult) -> None:
        if result.character_id not in self.unfinished:
            return  # already reported (the session closed under it)
        self.unfinished.discard(result.character_id)
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        self.results.put_nowait(result)
        self.report(result.character_id, "done" if result.ok else "failed")

    def halt(self, error: AurousError) -> None:
        assert self.stop is not None
        if not self.stop.done():
            self.stop.set_result(error)


async def resynthesize_many(
    characters: Characters,
    ids: Sequence[str],
    *,
    force_all: bool | None,
    auto_save: bool,
    timeout: float | None,
    concurrency: int | None,
    progress: Callable[[BatchProgress], None] | None,
) -> AsyncIterator[BatchResult]:
    """See :meth:`Characters.resynthesize_many`."""
    session = characters._session
    clock = session.clock
    loop = asyncio.get_running_loop()
    id_list = list(ids)  # validated by the caller
    deadline = clock.monotonic() + timeout if timeout is not None else None
    run = _Run(total=len(id_list), progress=progress,
               gets=lambda: session._scheduler.polls_sent, queued=len(id_list),
               unfinished=set(id_list))
    run.stop = loop.create_future()
    # In-flight POSTs are bounded by `concurrency`, else by the connection pool.
    slots = asyncio.Semaphore(concurrency or session._connection_limit)
    items: set[asyncio.Task[None]] = set()

    async def follow(character_id: str, has_token: asyncio.Future[None]) -> None:
        def token_granted() -> None:
            if not has_token.done():
                has_token.set_result(None)

        on_token(token_granted)
        try:
            with deadline_scope(deadline):
                character = await characters.resynthesize(character_id, force_all=force_all)
        except AurousError as exc:
            if isinstance(exc, InsufficientCreditsError) or not has_token.done():
                # Out of credits, or out of time before a token: the rest share the fate.
                run.halt(exc)
            run.dispatched -= 1
            run.finish(BatchResult(character_id=character_id, error=exc))
            return
        finally:
            slots.release()
            token_granted()
        run.dispatched -= 1
        run.synthesizing += 1
        last: Character = character
        try:
            async for update in watch_character(
                session._scheduler, characters.save, character_id, clock=clock,
                auto_save=auto_save, deadline=deadline, known=character,
            ):
                last = update.character
                run.report(character_id, update.status.value)
        except AurousError as exc:
            run.synthesizing -= 1
            run.finish(BatchResult(character_id=character_id,
                                   character=getattr(exc, "character", None) or last, error=exc))
            return
        run.synthesizing -= 1
        error = SynthesisFailedError(last) if last.status == CharacterStatus.FAILED else None
        run.finish(BatchResult(character_id=character_id, character=last, error=error))

    async def dispatch() -> None:
        assert run.stop is not None
        for index, character_id in enumerate(id_list):
            if run.stop.done():
                unsent = id_list[index:]
                break
            await slots.acquire()
            if run.stop.done():
                slots.release()
                unsent = id_list[index:]
                break
            run.queued -= 1
            run.dispatched += 1
            run.report(character_id, "dispatched")
            has_token: asyncio.Future[None] = loop.create_future()
            task = loop.create_task(follow(character_id, has_token))
            items.add(task)
            task.add_done_callback(items.discard)
            waits: set[asyncio.Future[Any]] = {has_token, task, run.stop}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if run.stop.done() and not has_token.done():
                # Still waiting for its token: never sent. Cancelling it is safe (the
                # limiter gives no token to a cancelled waiter).
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                run.dispatched -= 1
                run.queued += 1
                unsent = id_list[index:]
                break
        else:
            return
        error = run.stop.result()
        for character_id in unsent:
            run.queued -= 1
            run.finish(BatchResult(character_id=character_id, error=error))

    dispatcher = loop.create_task(dispatch(), name="aurous-async resynthesize_many")

    def shutdown() -> None:
        """The session is closing: end every call and report what is left."""
        for task in (dispatcher, *items):
            task.cancel()
        error = SessionClosedError("the session was closed during resynthesize_many")
        run.queued = run.dispatched = run.synthesizing = 0
        for character_id in [c for c in id_list if c in run.unfinished]:
            run.finish(BatchResult(character_id=character_id, error=error))

    session._batches.add(shutdown)
    try:
        run.report()
        for _ in range(len(id_list)):
            getter = asyncio.ensure_future(run.results.get())
            while not getter.done():
                watch = {getter} if dispatcher.done() else {getter, dispatcher}
                await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
                if dispatcher.done() and not dispatcher.cancelled() and dispatcher.exception():
                    getter.cancel()
                    raise dispatcher.exception()  # type: ignore[misc]
            yield getter.result()
    finally:
        session._batches.discard(shutdown)
        pending = [dispatcher, *items]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
