"""``resynthesize_many``: start many resynthesizes and follow each to its end.

Dispatch is pulled by the consumer: a new paid POST goes out only while the consumer
waits in ``__anext__``. A caller who breaks out of the loop, or stops iterating while
keeping the iterator, is not charged for one more character (tokens accumulate in the
bucket meanwhile, so a briefly busy consumer loses no throughput). Dispatch is sequential
at the rate limiter: one call at a time waits for a ``characters_synthesize`` token, so
the bucket serves ids in the order given, and when a 402 says the credits ran out, every
id not yet sent is reported unsent — none is sent after it.

A transient failure (connection, timeout, 5xx, 429) never reports an id failed before the
batch's deadline: a POST is retried with the same idempotency key (so it is charged at most
once), and a charged character is watched through the outage by the poll scheduler.
"""

from __future__ import annotations

from types import TracebackType

from ._fanout_run import FanOutRun
from ._models import BatchProgress, BatchResult

__all__ = ["BatchProgress", "FanOut"]


class FanOut:
    """One ``resynthesize_many`` run: an async iterator of :class:`BatchResult` as each
    character ends, and an async context manager that cancels what is left on exit::

        async with s.characters.resynthesize_many(ids) as batch:
            async for result in batch:
                ...

    A run nobody references any more (a loop left with ``break``) is cancelled too.
    """

    def __init__(self, run: FanOutRun) -> None:
        # The engine's tasks reference the engine, never this handle: when the caller
        # drops the handle, __del__ can end the run, as an async generator's would.
        self._run = run

    def __aiter__(self) -> FanOut:
        return self

    async def __anext__(self) -> BatchResult:
        return await self._run.next()

    async def __aenter__(self) -> FanOut:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every call and poll of this batch; nothing more is sent."""
        await self._run.aclose()

    def __del__(self) -> None:
        run = getattr(self, "_run", None)
        if run is not None:
            run.cancel()
