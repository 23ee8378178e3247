"""Injectable time: every part that waits (limiter, poller, retries, fake server) asks a
:class:`Clock`, so tests can run minutes of API time in milliseconds.

Three clocks ship:

* :class:`SystemClock` — real time (the default).
* :class:`ScaledClock` — real time sped up by a factor; the SDK and the fake server
  share one so that "6 tokens a minute" plays out in a second.
* :class:`FakeClock` — time moves only when a test calls :meth:`FakeClock.advance`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "ScaledClock", "SystemClock", "TimerHandle", "readings"]


@runtime_checkable
class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """A source of time and of waiting.

    ``monotonic()`` orders events, ``time()`` is Unix wall time (for HTTP headers such
    as ``X-RateLimit-Reset``), ``sleep()`` waits and ``call_later()`` schedules a
    callback on the running event loop.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class SystemClock:
    """Real time: :func:`time.monotonic`, :func:`time.time` and :func:`asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def __repr__(self) -> str:
        return "SystemClock()"


def readings(clock: Clock) -> tuple[Callable[[], float], Callable[[], float]]:
    """``clock.monotonic`` and ``clock.time``; for the system clock, the functions of
    :mod:`time` themselves (a Python call less per reading, and the hot path reads the
    clock several times per request)."""
    if type(clock) is SystemClock:
        return time.monotonic, time.time
    return clock.monotonic, clock.time


class ScaledClock:
    """Real time running ``scale`` times faster.

    Both readings start at the real ones and then advance ``scale`` seconds per real
    second; waits shrink by the same factor. Share one instance between the SDK and the
    fake server and both agree on what a "minute" is::

        clock = ScaledClock(60.0)   # one API minute per real second
    """

    def __init__(self, scale: float) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number, not {type(scale).__name__}")
        if not scale > 0 or scale == float("inf"):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.scale = float(scale)
        self._real_start = time.monotonic()
        self._wall_start = time.time()

    def monotonic(self) -> float:
        return self._real_start + (time.monotonic() - self._real_start) * self.scale

    def time(self) -> float:
        return self._wall_start + (time.monotonic() - self._real_start) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay) / self.scale, callback)

    def __repr__(self) -> str:
        return f"ScaledClock({self.scale!r})"


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that stands still until the test moves it.

    ``sleep()`` and ``call_later()`` wait for :meth:`advance`, which fires everything
    due in time order and lets the woken tasks run. With ``auto_advance=True`` a
    ``sleep()`` instead moves time forward itself and returns at once — handy for
    retry tests of one flow at a time::

        clock = FakeClock()
        task = asyncio.create_task(clock.sleep(5))
        await clock.advance(5)
        assert task.done()
    """

    def __init__(
        self,
        start: float = 1_000.0,
        *,
        wall_start: float = 1_800_000_000.0,
        auto_advance: bool = False,
    ) -> None:
        self.auto_advance = auto_advance
        #: Every ``sleep()`` duration asked for, in order (for asserting backoff waits).
        self.sleeps: list[float] = []
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.auto_advance:
            await self.advance(max(0.0, seconds))
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def pending_timers(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def next_deadline(self) -> float | None:
        """When the earliest live timer fires, or ``None``."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing each due timer at its own time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await _yield_to_ready_tasks()
        while True:
            due = self.next_deadline()
            if due is None or due > target:
                break
            _, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            timer.callback()
            await _yield_to_ready_tasks()
        self._now = target
        await _yield_to_ready_tasks()

    async def run_until_idle(self, *, limit: float = 86_400.0) -> None:
        """Advance from timer to timer until none is left (or ``limit`` seconds passed)."""
        end = self._now + limit
        await _yield_to_ready_tasks()
        while (due := self.next_deadline()) is not None and due <= end:
            await self.advance(max(0.0, due - self._now))

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


async def _yield_to_ready_tasks() -> None:
    # A woken task may wake another in turn; a few passes of the loop let chains settle
    # without real time passing.
    for _ in range(20):
        await asyncio.sleep(0)

#: The clock sessions use unless given another.
SYSTEM_CLOCK = SystemClock()
