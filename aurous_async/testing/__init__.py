"""A faithful fake of the Aurous API for tests, demos and users' own test suites.

Start it in-process and point any client at its ``base_url``::

    from aurous_async.testing import FakeAurousServer

    async with FakeAurousServer(time_scale=60) as fake:
        ...  # fake.base_url, fake.api_key, fake.requests, fake.ledger, fake.faults

or standalone (``python -m aurous_async.testing --help``)::

    python -m aurous_async.testing --port 8080 --seed 5 --time-scale 60 \\
        --fault 'POST /v1/characters/{character_id}/resynthesize=json_503:0.2'

A running fake is driven and inspected over HTTP under ``/_fake/`` (charge ledger, 429
counts, request log, seeding, faults, credits, webhook deliveries): see
:mod:`aurous_async.testing._control`.

Webhook endpoints registered on the fake (loopback ``http://`` receivers allowed) get
signed ``character.completed`` / ``character.failed`` events when a synthesis ends, with
retries and auto-disable on the fake's clock: see :mod:`aurous_async.testing._webhooks`
and ``fake.webhook_deliveries``.

This package never imports the client half of the SDK (session, transport, resources,
models): it is an independent reading of the API docs.
"""

from .._clock import Clock, FakeClock, ScaledClock, SystemClock
from ._faults import Fault, FaultKind, FaultPlan
from ._server import FakeAurousServer
from ._state import DEFAULT_BUCKETS, BucketLimit, Charge, FakeTeam, RecordedRequest
from ._webhooks import WebhookDelivery, WebhookEndpointRecord

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
    "WebhookDelivery",
    "WebhookEndpointRecord",
]
