"""Fault injection for the fake server: what can go wrong on the wire, on demand."""

from __future__ import annotations

import enum
import math
import random
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

__all__ = ["Fault", "FaultKind", "FaultPlan", "fault_from_json", "fault_to_json", "parse_fault"]


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
    #: Take ``delay`` real seconds to process the request (to trip client timeouts), or
    #: until the test calls the rule's :meth:`Fault.release`.
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

    A ``SLOW`` rule holds its requests ``delay`` real seconds, or until
    :meth:`release` — so a test can keep a request in flight for exactly as long as it
    needs, however busy the machine::

        held = server.faults.add(Fault(FaultKind.SLOW, route=..., nth=1, delay=30))
        ...  # the request is in flight here
        held.release()  # it is processed and answered now
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
    #: Set by :meth:`release`: the ``SLOW`` holds of this rule end (now and later).
    released: bool = attrs.field(default=False, init=False)

    def release(self) -> None:
        """End this ``SLOW`` rule's holds: requests held now go on at once, and any it
        fires on later are not held. Safe from any thread."""
        self.released = True

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
        """Add several rules, in order."""
        for fault in faults:
            self.add(fault)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[Fault]:
        """The rules, in the order they are tried."""
        with self._lock:
            return list(self._rules)

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


_COUNTS = ("nth", "every", "times")


def fault_from_json(data: Any, routes: Collection[str]) -> Fault:
    """A :class:`Fault` from its JSON form (the fake's control API), checked.

    ``data`` holds ``kind`` and any of ``route`` (a name in ``routes``; absent, ``null``
    or ``"*"`` for every route), ``nth``, ``every``, ``times`` (integers >= 1),
    ``probability`` (0 to 1), ``process`` (bool), ``delay`` (seconds) and
    ``status_value``. Raises ``ValueError`` naming the first bad field.
    """
    if not isinstance(data, Mapping):
        raise ValueError("a fault is a JSON object")
    unknown = sorted(set(data) - {"kind", "route", "probability", "process", "delay",
                                  "status_value", *_COUNTS})
    if unknown:
        raise ValueError(f"unknown fault field {unknown[0]!r}")
    fields: dict[str, Any] = {"kind": _kind(data.get("kind")),
                              "route": _route(data.get("route"), routes)}
    for name in _COUNTS:
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1")
            fields[name] = value
    if data.get("probability") is not None:
        fields["probability"] = _probability(data["probability"])
    if data.get("process") is not None:
        if not isinstance(data["process"], bool):
            raise ValueError("process must be true or false")
        fields["process"] = data["process"]
    if data.get("delay") is not None:
        delay = data["delay"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) \
                or not math.isfinite(delay) or delay < 0:
            raise ValueError("delay must be a number of seconds >= 0")
        fields["delay"] = float(delay)
    if data.get("status_value") is not None:
        if not isinstance(data["status_value"], str):
            raise ValueError("status_value must be a string")
        fields["status_value"] = data["status_value"]
    return Fault(**fields)


def fault_to_json(fault: Fault) -> dict[str, Any]:
    """The JSON form of a rule, with how often it was seen and fired."""
    return {"kind": fault.kind.value, "route": fault.route, "nth": fault.nth,
            "every": fault.every, "probability": fault.probability, "times": fault.times,
            "process": fault.process, "delay": fault.delay, "status_value": fault.status_value,
            "seen": fault.seen, "fired": fault.fired}


def parse_fault(spec: str, routes: Collection[str]) -> Fault:
    """A :class:`Fault` from the command line's ``ROUTE=KIND[:PROBABILITY]``.

    ``ROUTE`` is a route name such as ``"POST /v1/characters/{character_id}/resynthesize"``
    or ``*`` for every route; without a probability the fault fires on every match.
    Raises ``ValueError`` saying what is wrong.
    """
    route, sep, rest = spec.rpartition("=")
    if not sep or not route.strip():
        raise ValueError("expected ROUTE=KIND[:PROBABILITY]")
    kind, sep, probability = rest.partition(":")
    data: dict[str, Any] = {"kind": kind.strip(), "route": route.strip()}
    if sep:
        try:
            data["probability"] = float(probability)
        except ValueError:
            raise ValueError(f"probability {probability!r} is not a number") from None
    return fault_from_json(data, routes)


def _kind(value: Any) -> FaultKind:
    try:
        return FaultKind(value)
    except ValueError:
        kinds = ", ".join(kind.value for kind in FaultKind)
        raise ValueError(f"unknown fault kind {value!r} (one of {kinds})") from None


def _route(value: Any, routes: Collection[str]) -> str | None:
    if value is None or value == "*":
        return None
    if not isinstance(value, str) or value not in routes:
        raise ValueError(f"unknown route {value!r}: give * or one of {', '.join(sorted(routes))}")
    return value


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value <= 1.0:
        raise ValueError("probability must be a number from 0 to 1")
    return float(value)
