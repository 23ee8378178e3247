"""A pytest plugin (loaded automatically once aurous-async is installed) with a
``fake_aurous`` fixture: a fresh fake Aurous server per test.

::

    import aurous_async as aa

    async def test_my_resynthesize_flow(fake_aurous):
        cid = fake_aurous.add_character(status="ready")
        async with aa.AurousSession(fake_aurous.api_key, base_url=fake_aurous.base_url) as s:
            await my_code_under_test(s, cid)
        assert len(fake_aurous.charges_for(cid)) == 1

The server runs in its own thread and event loop, so the fixture is synchronous and
works under pytest-asyncio, anyio, or plain synchronous tests. Configure it per test
with the ``aurous_fake`` marker, whose keyword arguments go to
:class:`FakeAurousServer`::

    @pytest.mark.aurous_fake(time_scale=600, credits=8)
    def test_runs_out_of_credits(fake_aurous): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeAurousServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "aurous_fake(**kwargs): keyword arguments for the fake_aurous fixture's "
        "FakeAurousServer (time_scale, synthesis_seconds, credits, buckets, ...)",
    )


@pytest.fixture
def fake_aurous(request: pytest.FixtureRequest) -> Iterator[FakeAurousServer]:
    """A started :class:`FakeAurousServer`; ``base_url`` and ``api_key`` are set."""
    marker = request.node.get_closest_marker("aurous_fake")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    with FakeAurousServer(**kwargs).run_in_thread() as server:
        yield server
