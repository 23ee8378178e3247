"""The fake_aurous fixture, used from a user's test suite (run by pytester): the plugin
loads from its entry point, the marker configures it, and fake_aurous.session() works."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fake_aurous_fixture_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest
        import aurous_async as aa

        @pytest.mark.asyncio
        async def test_my_flow(fake_aurous):
            cid = fake_aurous.add_character(status="ready")
            async with aa.AurousSession(fake_aurous.api_key, base_url=fake_aurous.base_url) as s:
                character = await s.characters.resynthesize(cid)
            assert character.status == "synthesizing"
            assert len(fake_aurous.charges_for(cid)) == 1

        @pytest.mark.aurous_fake(credits=2)
        def test_marker_configures_the_server(fake_aurous):
            assert fake_aurous.default_team.credits == 2

        def test_each_test_gets_a_fresh_server(fake_aurous):
            assert fake_aurous.requests == []

        @pytest.mark.asyncio
        async def test_session_waits_on_the_fakes_fast_clock(fake_aurous):
            cid = fake_aurous.add_character(status="ready")
            async with fake_aurous.session() as s:
                await s.characters.resynthesize(cid)
                assert (await s.characters.wait(cid)).status == "reviewing"
        """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    result.assert_outcomes(passed=4)
