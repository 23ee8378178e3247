"""Fault injection for the fake server: what can go wrong on the wire, on demand."""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Iterable

import attrs

__all__ = ["Fault", "FaultKind", "FaultPlan"]


class FaultKind(str, enum.Enum):
    """What the fake server does instead of (or on top of) answering normally."""

    #: Process the request, then close the connection without sending a response.
    DROP = "drop"
    #: Answer 502 with an HTML body, as a load balancer would.
    HTML_502 = "html_502"
    #: Answer 503 with a JSON ``server_error`` envelope.
    JSON_503 = "json_503"
    #: Process the request, then answer 200 with a body that is not valid JSON.
    BROKEN_JSON = "broken_json"
    #: Take ``delay`` real seconds to process the request (to trip client timeouts).
    SLOW = "slow"
    #: Add unknown fields to every JSON object in the response body.
    EXTRA_FIELDS = "extra_fields"
    #: Replace ``status`` in the response body with an unknown value.
    UNKNOWN_STATUS = "unknown_status"

    def __str__(self) -> str:
        return self.value


@attrs.define
class Fault:
    """One fault rule.

    ``route`` is ``"METHOD /path/template"`` as the fake routes them, for example
    ``"POST /v1/characters/{character_id}/resynthesize"``; ``None`` matches every
    request. Of the matching requests, the rule fires on the ``nth`` one (1-based), on
    every ``every``-th one, or with ``probability`` — at most ``times`` times in all
    (``None`` = unlimited). ``process`` says whether the request takes effect on the
    server before the fault (defaults per kind: yes for ``DROP``/``BROKEN_JSON``/
    ``SLOW``/``EXTRA_FIELDS``/``UNKNOWN_STATUS``, no for the 5xx answers).

    Example::

        server.faults.add(Fault(FaultKind.DROP, route="POST /v1/characters", nth=1))
    """

    kind: FaultKind = attrs.field(converter=FaultKind)
    route: str | None = None
    nth: int | None = None
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    process: bool | None = None
    delay: float = 2.0
    status_value: str = "queued"
    fired: int = attrs.field(default=0, init=False)
    seen: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        choices = [x for x in (self.nth, self.every, self.probability) if x is not None]
        if len(choices) > 1:
            raise ValueError("give at most one of nth, every, probability")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.process is None:
            self.process = self.kind not in (FaultKind.HTML_502, FaultKind.JSON_503)

    def _matches(self, route: str) -> bool:
        return self.route is None or self.route == route

    def _fires(self, rng: random.Random) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.nth is not None:
            hit = self.seen == self.nth
        elif self.every is not None:
            hit = self.seen % self.every == 0
        elif self.probability is not None:
            hit = rng.random() < self.probability
        else:
            hit = True
        if hit:
            self.fired += 1
        return hit


class FaultPlan:
    """The fault rules of one fake server; the first rule that fires wins."""

    def __init__(self, *, seed: int = 0) -> None:
        self._rules: list[Fault] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        """Add a rule and return it (its ``fired`` count shows how often it hit)."""
        with self._lock:
            self._rules.append(fault)
        return fault

    def extend(self, faults: Iterable[Fault]) -> None:
        for fault in faults:
            self.add(fault)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pick(self, route: str) -> Fault | None:
        """The fault for the next request on ``route``, if any rule fires.

        Every matching rule counts the request, so ``nth``/``every`` mean the same
        whatever other rules exist; the first rule that fires wins.
        """
        chosen: Fault | None = None
        with self._lock:
            for rule in self._rules:
                if not rule._matches(route):
                    continue
                rule.seen += 1
                if chosen is None and rule._fires(self._rng):
                    chosen = rule
        return chosen

    def __len__(self) -> int:
        return len(self._rules)
