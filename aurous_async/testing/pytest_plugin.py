"""A pytest plugin (loaded automatically once aurous-async is installed) with a
``fake_aurous`` fixture: a fresh fake Aurous server per test, fast by default.

::

    async def test_my_resynthesize_flow(fake_aurous):
        cid = fake_aurous.add_character(status="ready")
        async with fake_aurous.session() as s:
            await my_code_under_test(s, cid)      # e.g. resynthesize, then wait()
        assert len(fake_aurous.charges_for(cid)) == 1

The fake's time runs :data:`FIXTURE_TIME_SCALE` times faster than real time, so a
synthesis (45 API seconds) takes about 45 ms and the documented buckets (6
resynthesizes a minute) refill in step. ``fake_aurous.session()`` hands out an
:class:`aurous_async.AurousSession` on the same clock; a session built by hand without
``clock=`` still works, but polls and paces in real seconds.

The server runs in its own thread and event loop, so the fixture is synchronous and
works under pytest-asyncio, anyio, or plain synchronous tests. Configure it per test
with the ``aurous_fake`` marker, whose keyword arguments go to
:class:`FakeAurousServer` (a ``clock`` or ``time_scale`` there replaces the default)::

    @pytest.mark.aurous_fake(time_scale=600, credits=8)
    def test_runs_out_of_credits(fake_aurous): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeAurousServer

__all__ = ["FIXTURE_TIME_SCALE", "fake_aurous"]

#: API seconds per real second under the fixture: a 45 s synthesis in about 45 ms, and
#: still slow enough that a few milliseconds of scheduling noise stay a few API seconds.
FIXTURE_TIME_SCALE = 1000.0


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``aurous_fake`` marker."""
    config.addinivalue_line(
        "markers",
        "aurous_fake(**kwargs): keyword arguments for the fake_aurous fixture's "
        "FakeAurousServer (time_scale, synthesis_seconds, credits, buckets, ...)",
    )


@pytest.fixture
def fake_aurous(request: pytest.FixtureRequest) -> Iterator[FakeAurousServer]:
    """A started :class:`FakeAurousServer` on fast time; ``base_url`` and ``api_key`` are
    set, and ``session()`` gives a client on the same clock."""
    marker = request.node.get_closest_marker("aurous_fake")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    if "clock" not in kwargs and "time_scale" not in kwargs:
        kwargs["time_scale"] = FIXTURE_TIME_SCALE
    with FakeAurousServer(**kwargs).run_in_thread() as server:
        yield server
