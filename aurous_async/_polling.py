"""How often watchers poll: :class:`PollPolicy`."""

from __future__ import annotations

import math
import random

import attrs

__all__ = ["PollPolicy"]


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

    >>> [round(d, 2) for d in PollPolicy(jitter=0).delays(4)]
    [2.0, 3.0, 4.5, 6.75]
    """

    interval: float = attrs.field(default=2.0, validator=_non_negative)
    max_interval: float = attrs.field(default=15.0, validator=_non_negative)
    multiplier: float = attrs.field(default=1.5, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)

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
