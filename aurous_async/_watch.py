"""What a watcher sees: :func:`watch_character` turns the poll scheduler's deliveries into
:class:`StatusUpdate`\\ s, and :class:`BackgroundSaves` finishes the free save of a
character whose watcher left before it could (so ``auto_save=True`` never leaves a charged
character unsaved in ``reviewing``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from ._clock import Clock
from ._context import deadline_scope
from ._errors import (
    AurousError,
    DeadlineExceededError,
    NotFoundError,
    SynthesisFailedError,
    WatchTimeoutError,
)
from ._models import Character, CharacterStatus, StatusUpdate
from ._polling import PollScheduler, _Subscription, is_transient

__all__ = ["BackgroundSaves", "flow_error", "is_transient", "watch_character"]

logger = logging.getLogger("aurous_async")

#: How long a save left behind by a departed watcher may take, in all (API seconds).
BACKGROUND_SAVE_TIMEOUT = 900.0


async def _next_state(sub: _Subscription, clock: Clock, deadline: float | None) -> Character:
    """The next state change for ``sub``; raises its error, or WatchTimeoutError."""
    while not sub.pending:
        if sub.error is not None:
            raise sub.error
        timer = None
        if deadline is not None:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise WatchTimeoutError(f"watching {sub.character_id}: the timeout passed")
            timer = clock.call_later(left, sub.wake)
        try:
            await sub.wait()
        finally:
            sub.waiter = None
            if timer is not None:
                timer.cancel()
    return sub.pending.pop(0)


async def watch_character(
    scheduler: PollScheduler,
    save: Callable[[str], Awaitable[Character]],
    character_id: str,
    *,
    clock: Clock,
    auto_save: bool,
    deadline: float | None,
    known: Character | None = None,
    leftover_saves: BackgroundSaves | None = None,
) -> AsyncIterator[StatusUpdate]:
    """The StatusUpdates of one character: first state, each change, terminal last.

    A deadline passed anywhere inside (a poll, the save, a rate-limit wait) raises
    :class:`WatchTimeoutError` carrying the last state seen. With ``auto_save``, a watcher
    that ends early (cancelled, closed, timed out) hands a character still in synthesis or
    review to ``leftover_saves``.
    """
    started = clock.monotonic()
    sub = scheduler.subscribe(character_id, known, deadline=deadline)
    previous: CharacterStatus | None = None
    last: Character | None = known
    finished = False
    try:
        while True:
            try:
                character = await _next_state(sub, clock, deadline)
            except NotFoundError:
                if last is None:
                    raise
                # Seen before, gone now: deleted (soft deletes answer 404 too).
                character = attrs.evolve(last, status=CharacterStatus.DELETED)
            last = character
            status = character.status
            if status == CharacterStatus.REVIEWING and auto_save:
                yield StatusUpdate(character=character, status=status, previous_status=previous,
                                   terminal=False, polls=sub.polls,
                                   elapsed=clock.monotonic() - started)
                previous = status
                with deadline_scope(deadline):
                    character = await save(character_id)
                last, status = character, character.status
            terminal = status.is_terminal and not (
                status == CharacterStatus.REVIEWING and auto_save
            )
            yield StatusUpdate(character=character, status=status, previous_status=previous,
                               terminal=terminal, polls=sub.polls,
                               elapsed=clock.monotonic() - started)
            if terminal:
                finished = True
                return
            previous = status
    except DeadlineExceededError as exc:
        error = exc if isinstance(exc, WatchTimeoutError) else WatchTimeoutError(str(exc))
        error.character = last
        raise error from None
    finally:
        scheduler.unsubscribe(sub)
        if auto_save and not finished and leftover_saves is not None and last is not None \
                and last.status in (CharacterStatus.SYNTHESIZING, CharacterStatus.REVIEWING):
            leftover_saves.adopt(character_id)


def raise_if_failed(character: Character) -> Character:
    """``character``, or :class:`SynthesisFailedError` if it ended ``failed``."""
    if character.status == CharacterStatus.FAILED:
        raise SynthesisFailedError(character)
    return character


class BackgroundSaves:
    """Saves that departed watchers left to do: each adopted character is watched (free
    GETs through the scheduler) until it reaches ``reviewing``, then saved. Bounded by
    ``timeout`` each, and ended by :meth:`aclose`."""

    def __init__(self, scheduler: PollScheduler, save: Callable[[str], Awaitable[Character]],
                 clock: Clock, *, timeout: float = BACKGROUND_SAVE_TIMEOUT) -> None:
        self._scheduler = scheduler
        self._save = save
        self._clock = clock
        self._timeout = timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> list[str]:
        """Ids whose save is still to be done."""
        return list(self._tasks)

    def adopt(self, character_id: str) -> None:
        if character_id in self._tasks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the generator was finalised outside a loop: nothing can run
        task = loop.create_task(self._finish(character_id),
                                name=f"aurous-async save {character_id}")
        self._tasks[character_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(character_id, None))

    async def _finish(self, character_id: str) -> None:
        deadline = self._clock.monotonic() + self._timeout
        try:
            async for _ in watch_character(self._scheduler, self._save, character_id,
                                           clock=self._clock, auto_save=True,
                                           deadline=deadline):
                pass
        except AurousError as exc:
            logger.warning("could not finish the save of %s: %s", character_id, exc)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def flow_error(error: AurousError) -> AurousError:
    """What a flow reports: a deadline passed below it is the flow's WatchTimeoutError."""
    if isinstance(error, DeadlineExceededError) and not isinstance(error, WatchTimeoutError):
        converted = WatchTimeoutError(str(error))
        converted.idempotency_key = error.idempotency_key
        converted.may_have_been_processed = error.may_have_been_processed
        return converted
    return error
