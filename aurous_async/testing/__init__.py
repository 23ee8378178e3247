"""A faithful fake of the Aurous API for tests, demos and users' own test suites.

Start it in-process and point any client at its ``base_url``::

    from aurous_async.testing import FakeAurousServer

    async with FakeAurousServer(time_scale=60) as fake:
        ...  # fake.base_url, fake.api_key, fake.requests, fake.ledger, fake.faults

or standalone: ``python -m aurous_async.testing --port 8080``.

This package never imports the client half of the SDK (session, transport, resources,
models): it is an independent reading of the API docs.
"""

from .._clock import Clock, FakeClock, ScaledClock, SystemClock
from ._faults import Fault, FaultKind, FaultPlan
from ._server import FakeAurousServer
from ._state import DEFAULT_BUCKETS, BucketLimit, Charge, FakeTeam, RecordedRequest

__all__ = [
    "DEFAULT_BUCKETS",
    "BucketLimit",
    "Charge",
    "Clock",
    "FakeAurousServer",
    "FakeClock",
    "FakeTeam",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "RecordedRequest",
    "ScaledClock",
    "SystemClock",
]
