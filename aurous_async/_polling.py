"""Polling: how often (:class:`PollPolicy`), from where (:class:`PollScheduler`, one per
session), and what watchers see (:func:`watch_character`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from ._clock import Clock
from ._errors import AurousError, NotFoundError, SessionClosedError, WatchTimeoutError
from ._models import Character, CharacterStatus, StatusUpdate
from ._transport import deadline_scope

__all__ = ["DurationEstimate", "PollPolicy", "PollScheduler", "watch_character"]


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {type(value).__name__}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class PollPolicy:
    """The polling schedule of a watched character.

    The first poll comes ``interval`` seconds after the last known state, each next one
    ``multiplier`` times later, never more than ``max_interval`` apart; each delay is
    spread by ±``jitter`` (a fraction) so that thousands of watchers do not poll in step.
    The schedule starts over whenever the status changes.

    With ``learn`` (the default), a session that has seen a few syntheses finish polls a
    synthesis it has just started first near the typical duration instead, and only
    then every ``interval`` growing: most characters are then seen done by their first
    GET, which saves the ``characters_get`` budget for wide fan-outs.

    >>> [round(d, 2) for d in PollPolicy(jitter=0).delays(4)]
    [2.0, 3.0, 4.5, 6.75]
    """

    interval: float = attrs.field(default=2.0, validator=_non_negative)
    max_interval: float = attrs.field(default=15.0, validator=_non_negative)
    multiplier: float = attrs.field(default=1.5, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)
    learn: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be > 0")
        if self.max_interval < self.interval:
            raise ValueError("max_interval must be >= interval")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if self.jitter >= 1:
            raise ValueError("jitter must be < 1 (a fraction of the delay)")

    def delay(self, polls_since_change: int, rng: random.Random | None = None) -> float:
        """The wait before the next poll, after ``polls_since_change`` polls saw no change."""
        base = min(self.max_interval,
                   self.interval * self.multiplier ** min(polls_since_change, 64))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))

    def delays(self, count: int) -> list[float]:
        """The first ``count`` delays of an unchanging status (for planning and tests)."""
        return [self.delay(n) for n in range(count)]


# -- the shared poll scheduler ----------------------------------------------------------


class _Subscription:
    """One watcher's view of one character: the states it has not read yet."""

    # Thousands of these live at once: a list and a bare future instead of a deque and an
    # asyncio.Event (each of which carries a 600-byte block) keep a watcher under 5 KB.
    __slots__ = ("character_id", "closed", "error", "last_status", "pending", "polls", "waiter")

    def __init__(self, character_id: str) -> None:
        self.character_id = character_id
        self.pending: list[Character] = []
        self.waiter: asyncio.Future[None] | None = None
        self.last_status: CharacterStatus | None = None
        self.error: AurousError | None = None
        self.polls = 0
        self.closed = False

    def _deliver(self, character: Character) -> None:
        self.polls += 1
        # Keep only changes: a slow reader holds one entry per status change at most.
        if character.status != self.last_status:
            self.last_status = character.status
            self.pending.append(character)
        self._wake()

    def _fail(self, error: AurousError) -> None:
        self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Watched:
    """The poll state of one character, shared by all its watchers."""

    __slots__ = (
        "due",
        "known",
        "poll",
        "polled",
        "started",
        "status",
        "subscribers",
        "unchanged",
    )

    def __init__(self, known: Character | None, now: float) -> None:
        self.subscribers: set[_Subscription] = set()
        self.poll: asyncio.Task[None] | None = None
        self.known = known
        self.status = known.status if known is not None else None
        self.unchanged = 0
        self.due = -math.inf
        # A synthesis we saw start (a POST just answered `synthesizing`): when, and how
        # many polls it has had; it teaches the duration estimate.
        fresh = known is not None and known.status == CharacterStatus.SYNTHESIZING
        self.started = now if fresh else None
        self.polled = 0


class DurationEstimate:
    """How long a synthesis takes, as this session has seen it: a running estimate of
    the ``quantile``-th duration.

    It starts from the median of the first few completions, then tracks the quantile
    from what each first poll finds: done (the estimate was long enough, shrink it a
    little) or not (grow it more). At equilibrium a fraction ``quantile`` of syntheses
    is done at the first poll.

    >>> estimate = DurationEstimate()
    >>> for seconds in (40, 50, 45, 55, 35):
    ...     estimate.completed(seconds)
    >>> estimate.value
    45.0
    """

    def __init__(self, *, quantile: float = 0.7, bootstrap: int = 5, step: float = 0.05) -> None:
        self.quantile = quantile
        self.step = step
        self._bootstrap = bootstrap
        self._samples: list[float] = []
        self.value: float | None = None

    def completed(self, upper_bound: float) -> None:
        """A synthesis was seen done ``upper_bound`` seconds after it started."""
        if self.value is None:
            self._samples.append(float(upper_bound))
            if len(self._samples) >= self._bootstrap:
                self.value = statistics.median(self._samples)

    def first_poll(self, done: bool) -> None:
        """What the first poll at the estimate found."""
        if self.value is None:
            return
        # Stochastic quantile tracking: up by q*step when short, down by (1-q)*step.
        change = self.step * self.value
        self.value += -change * (1 - self.quantile) if done else change * self.quantile


class PollScheduler:
    """Every watcher's GETs, from one place.

    Each watched character has a due time from the :class:`PollPolicy`; one runner task
    sleeps until the earliest (one timer, not one per watcher), then starts that poll.
    Watchers of the same id share its poll. At most ``max_in_flight`` polls run at once
    and each takes a ``characters_get`` token from the session's limiter, so the total
    never exceeds the GET budget; polls start in due-time order, so when the budget is
    tight every watcher waits its turn and none starves.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[Character]],
        policy: PollPolicy,
        clock: Clock,
        *,
        max_in_flight: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        self._fetch = fetch
        self.policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._watched: dict[str, _Watched] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._polls: set[asyncio.Task[None]] = set()
        self._closed = False
        #: GETs issued by this scheduler (for progress displays and benchmarks).
        self.polls_sent = 0
        #: Typical synthesis duration seen by this session (see PollPolicy.learn).
        self.estimate = DurationEstimate()

    @property
    def watched(self) -> int:
        """How many characters are being watched."""
        return len(self._watched)

    def subscribe(self, character_id: str, known: Character | None = None) -> _Subscription:
        """Start watching ``character_id``. With ``known`` (a state the caller just got)
        the first poll waits one interval; without, it goes out at once."""
        if self._closed:
            raise RuntimeError("the session is closed")
        sub = _Subscription(character_id)
        watched = self._watched.get(character_id)
        if watched is None:
            watched = self._watched[character_id] = _Watched(known, self._clock.monotonic())
            delay = 0.0 if known is None else None
            if watched.started is not None and self.policy.learn and self.estimate.value:
                delay = self.estimate.value * (1 + self._rng.uniform(0, self.policy.jitter))
            self._schedule(character_id, watched, delay)
        elif known is not None and watched.known is None:
            watched.known = known
        if watched.known is not None:
            sub.last_status = watched.known.status
            sub.pending.append(watched.known)
        watched.subscribers.add(sub)
        self._ensure_runner()
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        sub.closed = True
        watched = self._watched.get(sub.character_id)
        if watched is None:
            return
        watched.subscribers.discard(sub)
        if not watched.subscribers:
            # Its heap entry is skipped lazily when it comes up; a poll in flight for
            # nobody is dropped.
            del self._watched[sub.character_id]
            if watched.poll is not None:
                watched.poll.cancel()
            if not self._watched and self._wakeup is not None:
                self._wakeup.set()  # the runner exits when nobody is watched

    def _schedule(self, character_id: str, watched: _Watched, delay: float | None) -> None:
        if delay is None:
            delay = self.policy.delay(watched.unchanged, self._rng)
        watched.due = self._clock.monotonic() + delay
        heapq.heappush(self._heap, (watched.due, next(self._seq), character_id))
        if self._wakeup is not None:
            self._wakeup.set()

    def _ensure_runner(self) -> None:
        if self._runner is None or self._runner.done():
            self._wakeup = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="aurous-async poll scheduler"
            )

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while self._watched:
            entry = self._next_due()
            if entry is None:
                wakeup.clear()
                await wakeup.wait()
                continue
            due, character_id = entry
            delay = due - self._clock.monotonic()
            if delay > 0:
                wakeup.clear()
                timer = self._clock.call_later(delay, wakeup.set)
                try:
                    await wakeup.wait()
                finally:
                    timer.cancel()
                continue  # something may have come due earlier meanwhile
            heapq.heappop(self._heap)
            if self._slots is not None:
                await self._slots.acquire()
            watched = self._watched.get(character_id)
            if watched is None or watched.due != due:
                if self._slots is not None:
                    self._slots.release()
                continue
            watched.due = math.inf  # in flight: not due again until it returns
            task = asyncio.get_running_loop().create_task(self._poll(character_id))
            watched.poll = task
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)

    def _next_due(self) -> tuple[float, str] | None:
        while self._heap:
            due, _, character_id = self._heap[0]
            watched = self._watched.get(character_id)
            if watched is not None and watched.due == due:
                return due, character_id
            heapq.heappop(self._heap)  # stale: unwatched, or rescheduled since
        return None

    async def _poll(self, character_id: str) -> None:
        try:
            self.polls_sent += 1
            try:
                character = await self._fetch(character_id)
            except AurousError as exc:
                watched = self._watched.get(character_id)
                if watched is not None:
                    watched.poll = None
                    for sub in list(watched.subscribers):
                        sub._fail(exc)
                return
            watched = self._watched.get(character_id)
            if watched is None:
                return
            watched.poll = None
            self._learn(watched, character)
            if character.status == watched.status:
                watched.unchanged += 1
            else:
                watched.unchanged = 0
                watched.status = character.status
            watched.known = character
            for sub in list(watched.subscribers):
                sub._deliver(character)
            if character_id in self._watched:
                self._schedule(character_id, watched, None)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _learn(self, watched: _Watched, character: Character) -> None:
        if watched.started is None:
            return
        watched.polled += 1
        done = character.status != CharacterStatus.SYNTHESIZING
        if watched.polled == 1:
            self.estimate.first_poll(done)
        if done:
            self.estimate.completed(self._clock.monotonic() - watched.started)
            watched.started = None

    async def aclose(self) -> None:
        """Stop polling: cancel the runner and every poll in flight."""
        self._closed = True
        tasks = [t for t in (self._runner, *self._polls) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for watched in self._watched.values():
            for sub in watched.subscribers:
                sub._fail(SessionClosedError("the session was closed"))
        self._watched.clear()
        self._heap.clear()


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
            timer = clock.call_later(left, sub._wake)
        sub.waiter = asyncio.get_running_loop().create_future()
        try:
            await sub.waiter
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
) -> AsyncIterator[StatusUpdate]:
    """The StatusUpdates of one character: first state, each change, terminal last."""
    started = clock.monotonic()
    sub = scheduler.subscribe(character_id, known)
    previous: CharacterStatus | None = None
    last: Character | None = known
    try:
        while True:
            try:
                character = await _next_state(sub, clock, deadline)
            except NotFoundError:
                if last is None:
                    raise
                # Seen before, gone now: deleted (soft deletes answer 404 too).
                character = attrs.evolve(last, status=CharacterStatus.DELETED)
            except WatchTimeoutError as exc:
                exc.character = last
                raise
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
                return
            previous = status
    finally:
        scheduler.unsubscribe(sub)
