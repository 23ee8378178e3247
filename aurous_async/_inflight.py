"""Resynthesizes this session has in flight, per character, so that a second request for
the same character joins the first instead of paying again (a double click, fifty web
clients, a batch overlapping another)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._clock import Clock
from ._errors import AurousError, WatchTimeoutError
from ._models import Character

__all__ = ["InFlight", "InFlightTable", "OwnerLeft", "await_joined"]


class OwnerLeft(AurousError):
    """The caller whose POST others joined went away before it answered: a joiner takes
    the call over under the same Idempotency-Key (the API replays it if it went through,
    and charges once if it did not). Never reaches users."""

    def __init__(self, key: str) -> None:
        super().__init__("the resynthesize this flow joined was abandoned by its caller")
        self.key = key


class InFlight:
    """One character's resynthesize in flight: its key and its POST's answer."""

    __slots__ = ("answer", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.answer: asyncio.Future[Character] = asyncio.get_running_loop().create_future()

    def settle(self, character: Character | None = None,
               error: BaseException | None = None) -> None:
        """Hand the POST's answer (or error) to whoever joined; retrieved here, since
        nobody may have."""
        if self.answer.done():
            return
        if error is not None:
            self.answer.set_exception(error)
            self.answer.exception()
        else:
            assert character is not None
            self.answer.set_result(character)


class InFlightTable:
    """The session's in-flight resynthesizes, by character id."""

    def __init__(self) -> None:
        self._entries: dict[str, InFlight] = {}

    def get(self, character_id: str) -> InFlight | None:
        return self._entries.get(character_id)

    def claim_entry(self, character_id: str, entry: InFlight) -> None:
        self._entries[character_id] = entry

    def release(self, character_id: str, entry: InFlight) -> None:
        if self._entries.get(character_id) is entry:
            del self._entries[character_id]



async def await_joined(entry: InFlight, clock: Clock, deadline: float | None,
                       on_answer: Callable[[], None] | None = None) -> Character:
    """The POST answer of the flow that owns ``entry``, within our own deadline (a joiner
    that gives up never cancels the owner's call). Raises :class:`OwnerLeft` when the
    owner went away first."""
    answer = entry.answer
    if deadline is None:
        result = await asyncio.shield(answer)
    else:
        left = deadline - clock.monotonic()
        if left > 0 and not answer.done():
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def time_up() -> None:
                if not done.done():
                    done.set_result(None)

            timer = clock.call_later(left, time_up)
            try:
                waits: set[asyncio.Future[Character] | asyncio.Future[None]] = {answer, done}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
        if not answer.done():
            raise WatchTimeoutError("the timeout passed while the joined call was in flight")
        result = answer.result()
    if on_answer is not None:
        on_answer()
    return result
