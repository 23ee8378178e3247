"""How often a watched character is polled (:class:`PollPolicy`), and how long a
synthesis takes as a session has seen it (:class:`DurationEstimate`)."""

from __future__ import annotations

import random
import statistics

import attrs

from ._validate import number

__all__ = ["DurationEstimate", "PollPolicy"]


#: Multipliers beyond this make no schedule sense and overflow when raised to a power.
_MAX_MULTIPLIER = 100.0


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    number(value, attribute.name, minimum=0)


@attrs.frozen
class PollPolicy:
    """The polling schedule of a watched character.

    The first poll comes ``interval`` seconds after the last known state, each next one
    ``multiplier`` times later, never more than ``max_interval`` apart; each delay is
    spread by ±``jitter`` (a fraction) so that thousands of watchers do not poll in step.
    The schedule starts over whenever the status changes.

    With ``learn`` (the default), a session that has seen a few syntheses finish polls a
    synthesis it has just started first near the typical duration instead; one still
    running then is polled next near what such late ones took (when that is between
    ``interval`` and ``max_interval`` away, before every watcher's deadline, and no
    webhooks arrive), and then on the growing steps above: most characters are seen
    done by their first GET and most of the rest by their second, which saves the
    ``characters_get`` budget for wide fan-outs.

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
        if not 1 <= self.multiplier <= _MAX_MULTIPLIER:
            raise ValueError(f"multiplier must be between 1 and {_MAX_MULTIPLIER:g}")
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

    def __init__(self, *, quantile: float = 0.7, bootstrap: int = 5, step: float = 0.05,
                 minimum: float = 1.0, maximum: float = 600.0) -> None:
        self.quantile = quantile
        self.step = step
        # Bounded, so a run of very slow (or instant) syntheses cannot push the first
        # poll out for ever (or make it spin).
        self.minimum, self.maximum = minimum, maximum
        self._bootstrap = bootstrap
        self._samples: list[float] = []
        self.value: float | None = None

    def completed(self, upper_bound: float) -> None:
        """A synthesis was seen done ``upper_bound`` seconds after it started."""
        if self.value is None:
            self._samples.append(float(upper_bound))
            if len(self._samples) >= self._bootstrap:
                self.value = self._bounded(statistics.median(self._samples))

    def first_poll(self, done: bool) -> None:
        """What the first poll at the estimate found: whether the synthesis was done by
        then (or what a later poll shows as surely, for a scheduler whose own polls
        cannot reach the estimate)."""
        if self.value is None:
            return
        # Stochastic quantile tracking: up by q*step when short, down by (1-q)*step.
        change = self.step * self.value
        change = -change * (1 - self.quantile) if done else change * self.quantile
        self.value = self._bounded(self.value + change)

    def _bounded(self, value: float) -> float:
        return min(self.maximum, max(self.minimum, value))
