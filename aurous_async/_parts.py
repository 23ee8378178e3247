"""The parts a session builds and hands to its resources: nothing below the session holds
the session itself."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ._clock import Clock
from ._http import HttpClient
from ._inflight import InFlightTable
from ._polling import PollScheduler
from ._ratelimit import RateLimiter
from ._transport import Transport
from ._watch import BackgroundSaves

__all__ = ["SessionParts"]


@attrs.frozen(kw_only=True)
class SessionParts:
    """What resources and flows share within one session."""

    transport: Transport
    http: HttpClient
    clock: Clock
    scheduler: PollScheduler
    saves: BackgroundSaves
    connection_limit: int
    #: Running ``resynthesize_many`` batches: closing the session ends each through this.
    batches: set[Callable[[], None]] = attrs.field(factory=set)
    #: Resynthesizes in flight per character, for flows and batches to join.
    inflight: InFlightTable = attrs.field(factory=InFlightTable)

    @property
    def limiter(self) -> RateLimiter | None:
        return self.transport.limiter
