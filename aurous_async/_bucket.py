"""One token bucket, as the server keeps it, shared by every thread and event loop of the
process that uses it; and the per-loop FIFO queue of callers waiting for its tokens.

:class:`TokenState` is the count: ``capacity`` tokens at most, ``rate`` more per second,
behind a ``threading.Lock`` because sessions in several threads (each with its own event
loop) may spend from the same team bucket. It knows nothing of asyncio.

:class:`LoopQueue` is the waiting, which belongs to one event loop (futures and timers do):
a caller that finds tokens *and nobody queued* in its loop takes one at once, with no
future and no timer. Everyone else joins a FIFO deque of futures. One timer per queue —
never one per waiter — fires when the next token is due and hands tokens to the head. A
cancelled waiter is skipped; one cancelled after being handed a token gives it back, so
cancellation never loses a token nor holds up the queue. A change that may free tokens
early (an answer, a token given back) wakes the queues of every loop.

Two things keep us behind the server rather than ahead of it:

* **phase**: when a full bucket is first spent, the server's refill clock starts when our
  request *arrives*, later than we sent it; so our refill waits for the first answer of
  that phase (``observe``) instead of counting from the send;
* **cold start**: a bucket we have never heard about may have been emptied by our previous
  life (a restarted bot, the last CLI run) or another key of the team, so its first call
  goes alone, and the rate-limit headers of that answer set the count before anyone else
  goes. It costs one round trip, once per bucket and process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import weakref

from ._clock import Clock, TimerHandle
from ._errors import DeadlineExceededError

__all__ = ["MAX_BLOCK", "LoopQueue", "TokenState"]

# Float refills land a hair under whole tokens; a token is a token within this slack.
_EPSILON = 1e-9
#: The longest a 429 can block a bucket, whatever its Retry-After says (seconds).
MAX_BLOCK = 120.0
#: The longest a cold-start probe, or the first call of a burst, holds its bucket's
#: refill without an answer (seconds).
PROBE_LEASE = 120.0


class TokenState:
    """The count of one bucket (see the module docstring). Every method takes the lock."""

    def __init__(self, *, capacity: int, rate: float, now: float, observed: bool) -> None:
        self.lock = threading.Lock()
        self.capacity = float(capacity)
        self.rate = rate
        self.observed = observed  # someone reports answers: phase and cold start apply
        self.tokens = self.capacity
        self.updated = now
        self.blocked_until = -math.inf
        self.phase_start = -math.inf
        self.phase_confirmed = True
        self.lag = 0.0  # the longest recent round trip, in clock seconds
        self.cold = observed  # nothing heard from the server about this bucket yet
        self.probing = False  # the cold-start call is out
        self.probe_started = -math.inf
        self.waiting = 0  # callers queued, in every loop: none may be overtaken
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    # -- called with the lock held -------------------------------------------------------

    def _refill(self, now: float) -> None:
        if not self.phase_confirmed and now - self.phase_start >= PROBE_LEASE:
            # No answer for this phase, ever (its call was lost): start the refill from
            # the phase's start plus a round trip rather than wait for ever.
            self.phase_confirmed, self.updated = True, self.phase_start + self.lag
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def _held(self, now: float) -> bool:
        """Nobody may take a token until an answer arrives (cold-start probe out) — for
        at most PROBE_LEASE: a probe whose answer never comes (its loop was stopped) must
        not hold the bucket for ever."""
        if self.cold and self.probing and now - self.probe_started >= PROBE_LEASE:
            self.probing = False
        return self.cold and self.probing

    def _ready_at(self, now: float, tokens_needed: float) -> float:
        """When ``tokens_needed`` tokens are there (and no 429 blocks us); while the
        refill clock waits for an answer, estimated from the longest round trip seen."""
        missing = max(0.0, tokens_needed - self.tokens)
        start = self.updated if self.phase_confirmed else self.phase_start + self.lag
        return max(self.blocked_until, max(now, start) + missing / self.rate)

    def _try_take(self, now: float) -> bool:
        if (now < self.blocked_until or self.tokens < 1 - _EPSILON
                or (self.cold and self._held(now))):
            return False
        if self.cold:
            self.probing, self.probe_started = True, now
        if self.observed and self.tokens >= self.capacity - _EPSILON:
            # Leaving "full" starts the refill clock; ours waits for the first answer.
            self.phase_start = now
            self.phase_confirmed = False
            self.updated = math.inf
        self.tokens -= 1
        return True

    # -- public, locking -----------------------------------------------------------------

    def take_if_free(self, now: float) -> bool:
        """The uncontended path: a token when one is there and nobody (in any loop)
        queues for it — no future, no timer, no loop lookup."""
        lock = self.lock
        # (Not ``with``: entering and leaving it costs twice acquire() and release().)
        lock.acquire()
        try:
            if self.waiting:
                return False
            if self.cold or now < self.blocked_until:
                self._refill(now)
                return self._try_take(now)
            # A warm bucket (nearly every call): _refill and _try_take written out, as
            # every call of every session pays for this path.
            if self.phase_confirmed:
                updated = self.updated
                if now > updated:
                    tokens = self.tokens + (now - updated) * self.rate
                    self.tokens = tokens if tokens < self.capacity else self.capacity
                    self.updated = now
            elif now - self.phase_start >= PROBE_LEASE:
                self._refill(now)
            tokens = self.tokens
            if tokens < 1 - _EPSILON:
                return False
            if self.observed and tokens >= self.capacity - _EPSILON:
                # Leaving "full" starts the refill clock; ours waits for the first answer.
                self.phase_start, self.phase_confirmed, self.updated = now, False, math.inf
            self.tokens = tokens - 1
            return True
        finally:
            lock.release()

    def tokens_at(self, now: float) -> float:
        with self.lock:
            self._refill(now)
            return self.tokens

    def estimated_wait(self, now: float, queued: int) -> float:
        """Seconds until a caller joining behind ``queued`` others would get a token."""
        with self.lock:
            self._refill(now)
            return max(0.0, self._ready_at(now, queued + 1) - now)

    def observe(self, now: float, wall_now: float, remaining: int | None,
                reset: float | None, retry_after: float | None, limited: bool,
                sent_at: float | None, received_at: float | None) -> None:
        """Fold one answer (or one attempt that went out unanswered) into the count."""
        lock = self.lock
        lock.acquire()  # (not ``with``: see take_if_free)
        try:
            self._refill(now)
            trip = 0.0  # the attempt's round trip, when it went out and an answer came
            if sent_at is not None and received_at is not None:
                trip = received_at - sent_at
                lag = self.lag * 0.98
                self.lag = trip if trip > lag else lag
                if not self.phase_confirmed and sent_at >= self.phase_start:
                    # The first request of this phase reached the server no later than
                    # this attempt ended: the server's refill clock runs by now.
                    self.phase_confirmed = True
                    self.updated = max(self.phase_start, received_at)
            heard = self.cold and sent_at is not None
            if heard:
                self.cold = self.probing = False
            if limited:
                self.tokens = min(self.tokens, 0.0)
                wait = retry_after if retry_after is not None else 1 / self.rate
                # A hostile or broken Retry-After must not stall every caller for ever.
                self.blocked_until = max(self.blocked_until, now + min(wait, MAX_BLOCK))
            elif heard and remaining is not None:
                # The cold-start answer: the server's count is the count.
                self.tokens = min(self.tokens, float(remaining))
            elif remaining is not None or reset is not None:
                # The server's count is the truth about the team's bucket, but a blurred
                # one: Remaining is rounded down, and the bucket has refilled since the
                # request arrived (up to a round trip ago). Only a count lower than that
                # blur can explain means someone else (another process, a script) spent
                # tokens.
                blur = 1.0 + trip * self.rate
                if remaining is not None:
                    seen = float(remaining)
                else:
                    assert reset is not None
                    # Reset is the Unix time the bucket is full again, rounded up to a
                    # second.
                    seen = max(0.0, self.capacity - max(0.0, reset - wall_now) * self.rate)
                    blur += self.rate
                if self.tokens > seen + blur:
                    self.tokens = seen
        finally:
            lock.release()
        if self.waiting:  # (wake_all checks too; this spares the call after most answers)
            self.wake_all()

    def release(self, now: float) -> None:
        """Give back a token whose request never went out."""
        with self.lock:
            self._refill(now)
            self.tokens = min(self.capacity, self.tokens + 1)
            if self.cold:
                self.probing = False  # the probe never left: the next call probes
        self.wake_all()

    def queue(self, clock: Clock) -> LoopQueue:
        """The waiting line of the running loop."""
        loop = asyncio.get_running_loop()
        with self.lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = LoopQueue(self, clock, loop)
            return queue

    def wake_all(self) -> None:
        """Let every loop's queue hand out what tokens there are now."""
        if not self.waiting:
            # Nobody queues in any loop (the common case, after every answer): skip the
            # walk over the loops' queues. Read without the lock: a caller queueing
            # meanwhile sees this state, changed under the lock before, and arms its own
            # timer from it.
            return
        with self.lock:
            queues = list(self._queues.values())
        if not queues:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for queue in queues:
            if not queue.live_waiters:
                continue
            if queue.loop is running:
                queue.wake()
            elif not queue.loop.is_closed():
                # A loop that closed meanwhile has nobody left to wake.
                with contextlib.suppress(RuntimeError):
                    queue.loop.call_soon_threadsafe(queue.wake)


class LoopQueue:
    """The FIFO line of one event loop for one :class:`TokenState`."""

    def __init__(self, state: TokenState, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.clock = clock
        self.loop = loop
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.live_waiters = 0
        self.timer: TimerHandle | None = None
        self.timer_at = math.inf

    async def acquire(self, deadline: float | None) -> None:
        state = self.state
        now = self.clock.monotonic()
        with state.lock:
            state._refill(now)
            if not self.live_waiters and state._try_take(now):
                return
            # Our turn comes once everyone queued before us, and we, have a token.
            eta = state._ready_at(now, self.live_waiters + 1)
            if deadline is not None and eta > deadline:
                raise DeadlineExceededError(
                    f"a rate-limit wait of {eta - now:.1f}s would pass the deadline"
                )
            self.live_waiters += 1
            state.waiting += 1
            # While the bucket waits for an answer the estimate above may be too early:
            # then our own timer enforces the deadline.
            unsure = not state.phase_confirmed or state._held(now)
        future: asyncio.Future[None] = self.loop.create_future()
        self.waiters.append(future)
        self._arm(now)
        timer = None
        if deadline is not None and unsure:
            timer = self.clock.call_later(deadline - now, lambda: _expire(future))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                # Handed a token in the same loop tick we were cancelled: give it back.
                state.release(self.clock.monotonic())
            else:
                if not future.done():
                    future.cancel()
                with state.lock:
                    self.live_waiters -= 1
                    state.waiting -= 1
                self.wake()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        """Hand out what tokens there are, in queue order, then re-arm the timer."""
        now = self.clock.monotonic()
        handed: list[asyncio.Future[None]] = []
        with self.state.lock:
            self.state._refill(now)
            while self.waiters:
                future = self.waiters[0]
                if future.done():  # cancelled: skip
                    self.waiters.popleft()
                    continue
                if not self.state._try_take(now):
                    break
                self.waiters.popleft()
                self.live_waiters -= 1
                self.state.waiting -= 1
                handed.append(future)
        for future in handed:
            future.set_result(None)
        self._arm(now)

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, math.inf
        self.wake()

    def _arm(self, now: float) -> None:
        """Keep exactly one timer, set for when the head of the queue can go."""
        if not self.live_waiters:
            self._disarm()
            return
        state = self.state
        with state.lock:
            at = state._ready_at(now, 1.0)
            held = state._held(now)
            waiting_for_answer = not state.phase_confirmed or held
        if waiting_for_answer:
            # An answer (observe) or a release wakes us; one that never comes, at the
            # end of its lease.
            at = (state.probe_started if held else state.phase_start) + PROBE_LEASE
            if self.timer is not None and self.timer_at <= at:
                return
            self._disarm()
            self.timer_at = at
            self.timer = self.clock.call_later(at - now, self._on_timer)
            return
        if self.timer is not None and self.timer_at <= at:
            return
        self._disarm()
        self.timer_at = at
        self.timer = self.clock.call_later(at - now, self._on_timer)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.timer_at = None, math.inf


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(
            DeadlineExceededError("the rate-limit wait would pass the deadline"))
