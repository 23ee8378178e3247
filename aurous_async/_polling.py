"""Polling: how often (:class:`PollPolicy`) and from where (:class:`PollScheduler`, one
per session). What a watcher sees is built on top, in ``_watch.py``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable

from ._clock import Clock
from ._errors import (
    APIConnectionError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    SessionClosedError,
)
from ._models import Character, CharacterStatus
from ._poll_policy import DurationEstimate, PollPolicy

__all__ = ["DurationEstimate", "PollPolicy", "PollScheduler", "is_transient"]


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may pass by itself (an outage, a restart, a busy server): a
    watcher or fan-out waits it out instead of giving up."""
    if isinstance(error, APIConnectionError):
        return error.transient
    if isinstance(error, MalformedResponseError):
        return error.code == "invalid_json"
    return isinstance(error, (ServerError, RateLimitError))


#: Webhook pushes count as "arriving" for this long after the last one (seconds).
PUSH_WINDOW = 600.0
#: The poll interval while pushes arrive (at least PollPolicy.max_interval).
PUSH_SAFETY_NET = 120.0
# -- the shared poll scheduler ----------------------------------------------------------


class _Subscription:
    """One watcher's view of one character: the states it has not read yet."""

    # Thousands of these live at once: a list and a bare future instead of a deque and an
    # asyncio.Event (each of which carries a 600-byte block) keep a watcher under 5 KB.
    __slots__ = ("character_id", "closed", "deadline", "error", "last_status", "pending",
                 "polls", "scheduler", "waiter")

    def __init__(self, character_id: str, scheduler: PollScheduler,
                 deadline: float | None) -> None:
        self.character_id = character_id
        self.scheduler = scheduler
        self.deadline = deadline  # the watcher's, on the scheduler's clock
        self.pending: list[Character] = []
        self.waiter: asyncio.Future[None] | None = None
        self.last_status: CharacterStatus | None = None
        self.error: BaseException | None = None
        self.polls = 0
        self.closed = False

    def wait(self) -> asyncio.Future[None]:
        """The future a reader awaits for the next state; while it waits, polling goes on."""
        self.waiter = asyncio.get_running_loop().create_future()
        self.scheduler.resume(self.character_id)
        return self.waiter

    def deliver(self, character: Character) -> None:
        self.polls += 1
        # Keep only changes: a slow reader holds one entry per status change at most.
        if character.status != self.last_status:
            self.last_status = character.status
            self.pending.append(character)
        self.wake()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Watched:
    """The poll state of one character, shared by all its watchers."""

    __slots__ = (
        "aimed",
        "due",
        "failures",
        "known",
        "missed",
        "parked",
        "poll",
        "started",
        "status",
        "subscribers",
        "told",
        "unchanged",
    )

    def __init__(self, known: Character | None, now: float) -> None:
        self.subscribers: set[_Subscription] = set()
        self.poll: asyncio.Task[None] | None = None
        self.known = known
        self.status = known.status if known is not None else None
        self.unchanged = 0
        self.failures = 0  # transient poll failures in a row
        self.parked = False  # due, but every watcher has unread states: no poll for now
        self.due = -math.inf
        # A synthesis we saw start (a POST just answered `synthesizing`): when, whether
        # a poll the first estimate timed found it still running, and whether it has
        # taught the late estimate yet. It teaches the estimates; `aimed` is the one
        # that timed the next poll, if any.
        fresh = known is not None and known.status == CharacterStatus.SYNTHESIZING
        self.started = now if fresh else None
        self.missed = self.told = False
        self.aimed: DurationEstimate | None = None


class PollScheduler:
    """Every watcher's GETs, from one place.

    Each watched character has a due time from the :class:`PollPolicy`; one runner task
    sleeps until the earliest (one timer, not one per watcher), then starts that poll.
    Watchers of the same id share its poll. At most ``max_in_flight`` polls run at once
    and each takes a ``characters_get`` token from the session's limiter, so the total
    never exceeds the GET budget; polls start in due-time order, so when the budget is
    tight every watcher waits its turn and none starves.

    Polling is pulled by the watchers: a character is polled only while some watcher of
    it waits for its next state, so watchers whose consumer stopped reading cost no GETs.
    A transient failure (outage, 5xx, 429, timeout) is retried on the policy's growing
    schedule, never passed on; anything else (404, 401, 403, a bug) is passed to every
    watcher of that character, and the next watcher starts afresh.
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
        #: The same for syntheses still running at the first estimate: when to look
        #: again (a quantile of the late ones, instead of the policy's short steps).
        self.late_estimate = DurationEstimate(quantile=0.8)
        self._pushed_at = -math.inf

    @property
    def watched(self) -> int:
        """How many characters are being watched."""
        return len(self._watched)

    def subscribe(self, character_id: str, known: Character | None = None, *,
                  deadline: float | None = None) -> _Subscription:
        """Start watching ``character_id``. With ``known`` (a state the caller just got)
        the first poll waits one interval, or the learned synthesis time; without, it goes
        out at once. No first poll is planned past ``deadline``."""
        if self._closed:
            raise SessionClosedError("the session is closed")
        sub = _Subscription(character_id, self, deadline)
        now = self._clock.monotonic()
        watched = self._watched.get(character_id)
        if watched is None:
            watched = self._watched[character_id] = _Watched(known, now)
            delay = 0.0 if known is None else self.policy.delay(0, self._rng)
            aimed = None
            if watched.started is not None and self.policy.learn and self.estimate.value:
                aimed, delay = self.estimate, self._timed(self.estimate.value)
            if known is not None and self._pushes_active():
                aimed, delay = None, self._safety_net()
            self._schedule(character_id, watched, delay, aimed)
        elif known is not None and watched.known is None:
            watched.known = known
        if deadline is not None and watched.due > deadline and not watched.parked:
            # Look once before the caller's time is up rather than never.
            self._schedule(character_id, watched, max(0.0, (deadline - now) * 0.9))
        if watched.known is not None:
            sub.last_status = watched.known.status
            sub.pending.append(watched.known)
        watched.subscribers.add(sub)
        self._ensure_runner()
        return sub

    def expect_pushes(self) -> None:
        """Webhook deliveries will come (a receiver feeds this session): poll only as a
        safety net from now on, as if a push had just arrived."""
        self._pushed_at = self._clock.monotonic()

    def push(self, character_id: str) -> bool:
        """A verified webhook says ``character_id`` changed: poll it now (one GET
        confirms the state). From now on, while pushes keep coming, polls are only a
        safety net (every ``PUSH_SAFETY_NET`` seconds, at least ``max_interval``). True
        when someone watches that character."""
        self._pushed_at = self._clock.monotonic()
        watched = self._watched.get(character_id)
        if watched is None:
            return False
        if watched.poll is None:  # one in flight already reads the new state
            watched.parked = False
            self._schedule(character_id, watched, 0.0)
        return True

    def _pushes_active(self) -> bool:
        return self._clock.monotonic() - self._pushed_at < PUSH_WINDOW

    def _safety_net(self) -> float:
        """How often a watched character is polled while pushes arrive: rarely enough
        that a pushed fan-out spends about one GET per character, often enough that a
        lost delivery costs minutes, not hours."""
        return max(self.policy.max_interval, PUSH_SAFETY_NET)

    def resume(self, character_id: str) -> None:
        """A watcher waits for a state: a parked character is polled again."""
        watched = self._watched.get(character_id)
        if watched is not None and watched.parked:
            watched.parked = False
            self._schedule(character_id, watched, 0.0)
            self._ensure_runner()  # it may have ended while everything was parked

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

    def _schedule(self, character_id: str, watched: _Watched, delay: float | None,
                  aimed: DurationEstimate | None = None) -> None:
        """Plan the next poll ``delay`` seconds from now (None: the policy's next step);
        ``aimed`` is the estimate that timed it, which its result will teach."""
        watched.aimed = aimed
        if delay is None and self._pushes_active() and not watched.failures:
            delay = self._safety_net()  # webhooks tell us; polls are only the safety net
        if delay is None:
            delay = self.policy.delay(watched.unchanged + watched.failures, self._rng)
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
            if watched is None or watched.due != due or not _wanted(watched):
                if watched is not None and watched.due == due:
                    watched.parked, watched.due = True, math.inf
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
            except Exception as exc:
                self._failed(character_id, exc)
                return
            watched = self._watched.get(character_id)
            if watched is None:
                return
            watched.poll = None
            watched.failures = 0
            timed = self._learn(watched, character)
            if character.status == watched.status:
                watched.unchanged += 1
            else:
                watched.unchanged = 0
                watched.status = character.status
            watched.known = character
            for sub in list(watched.subscribers):
                sub.deliver(character)
            if character_id in self._watched:
                self._schedule(character_id, watched, *(timed or (None, None)))
        finally:
            if self._slots is not None:
                self._slots.release()

    def _failed(self, character_id: str, error: Exception) -> None:
        watched = self._watched.get(character_id)
        if watched is None:
            return
        watched.poll = None
        if is_transient(error):
            # Ride it out: the watchers' own deadlines end the wait if it lasts.
            watched.failures += 1
            self._schedule(character_id, watched, None)
            return
        # Final for these watchers; whoever watches next starts with a fresh poll.
        del self._watched[character_id]
        for sub in list(watched.subscribers):
            sub.fail(error)

    def _timed(self, seconds: float) -> float:
        """The delay of a poll an estimate times: ``seconds``, spread only later (an
        early poll would find a synthesis running more often than the estimate means)."""
        return seconds * (1 + self._rng.uniform(0, self.policy.jitter))

    def _learn(self, watched: _Watched,
               character: Character) -> tuple[float, DurationEstimate] | None:
        """Teach the estimates what a poll of a synthesis we saw start found; the next
        poll's delay and the estimate timing it, when one does (else the policy's)."""
        aimed, watched.aimed = watched.aimed, None
        if watched.started is None:
            return None
        done = character.status != CharacterStatus.SYNTHESIZING
        now = self._clock.monotonic()
        elapsed = now - watched.started
        late = self.late_estimate
        if aimed is not None:
            aimed.first_poll(done)
            watched.told = watched.told or aimed is late
        elif watched.missed and not watched.told and late.value is not None and (
            elapsed <= late.value if done else elapsed >= late.value
        ):
            # A poll the late estimate did not time still tells whether this synthesis
            # was done by the estimate; once per synthesis, so that an estimate its own
            # polls cannot reach (out of the window below) comes back into it.
            late.first_poll(done)
            watched.told = True
        if done:
            self.estimate.completed(elapsed)
            if watched.missed:
                late.completed(elapsed)
            watched.started = None
            return None
        if aimed is not self.estimate:
            return None
        watched.missed = True
        if late.value is None or self._pushes_active():
            return None
        # Only where the policy's own steps would also look: not sooner than its first,
        # not later than its longest, and never past a watcher's deadline.
        left = late.value - elapsed
        if not self.policy.interval <= left <= self.policy.max_interval:
            return None
        delay = self._timed(left)
        if any(sub.deadline is not None and now + delay >= sub.deadline
               for sub in watched.subscribers):
            return None
        return delay, late

    async def aclose(self) -> None:
        """Stop polling: cancel the runner and every poll in flight; every watcher ends
        with :class:`SessionClosedError`."""
        self._closed = True
        tasks = [t for t in (self._runner, *self._polls) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for watched in self._watched.values():
            for sub in watched.subscribers:
                sub.fail(SessionClosedError("the session was closed"))
        self._watched.clear()
        self._heap.clear()


def _wanted(watched: _Watched) -> bool:
    """Some watcher is waiting for a state now (a consumer that walked away is not)."""
    return any(sub.waiter is not None for sub in watched.subscribers)
