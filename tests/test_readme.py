"""Every example in README.md runs against the fake server.

The scripts and the web app run in this process, exactly as written, except that a
session they make runs on the fake's 1000x clock (as ``fake.session()`` gives it), so
their polls take milliseconds instead of real seconds. The Redis script runs as a user
runs it: in a fresh interpreter, on real time. The pytest and FastAPI examples run as
user suites, in a pytest of their own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```python\n# readme-example: (\w+)\n(.*?)```", re.DOTALL)
EXAMPLES = [(kind, code) for kind, code in BLOCK.findall(README.read_text())]


def examples(kind: str) -> list[str]:
    return [code for k, code in EXAMPLES if k == kind]


def test_the_readme_has_its_examples() -> None:
    assert sorted({k for k, _ in EXAMPLES}) == ["fastapi", "journal", "pytest", "redis",
                                                "script", "web"]
    assert len(examples("script")) == 3


@pytest.fixture
def fake() -> Iterator[FakeAurousServer]:
    with FakeAurousServer(time_scale=1000, synthesis_seconds=45).run_in_thread() as server:
        yield server


def env_for(fake: FakeAurousServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUROUS_")}
    return {**env, "AUROUS_API_KEY": fake.api_key, "AUROUS_BASE_URL": fake.base_url, **extra}


@pytest.fixture
def in_process(fake: FakeAurousServer, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs an example as a script in this process (``__name__ == "__main__"``) with
    ``env_for(fake, **extra)`` as its environment and every session it makes on the
    fake's clock; returns what it printed (stdout, stderr)."""

    class OnTheFakesClock(aa.AurousSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("clock", fake.clock)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(aa, "AurousSession", OnTheFakesClock)

    def run(code: str, **extra: str) -> tuple[str, str]:
        for name in [name for name in os.environ if name.startswith("AUROUS_")]:
            monkeypatch.delenv(name)
        for name, value in env_for(fake, **extra).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
        return capsys.readouterr()

    return run


@pytest.mark.parametrize("index", range(3))
def test_script_examples_run(fake: FakeAurousServer, in_process: Any, index: int) -> None:
    ids = [fake.add_character(name=f"seed {i}") for i in range(4)]
    out, err = in_process(examples("script")[index], CHARACTER_ID=ids[0])
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert out.strip()
    assert fake.rate_limited == {}


async def test_web_example_serves_a_resynthesize(fake: FakeAurousServer, in_process: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.setenv("AUROUS_API_KEY", fake.api_key)
    monkeypatch.setenv("AUROUS_BASE_URL", fake.base_url)
    namespace: dict[str, object] = {"__name__": "readme_web_example"}
    exec(compile(examples("web")[0], "README.md", "exec"), namespace)
    cid = fake.add_character()
    async with TestClient(TestServer(namespace["app"])) as client:  # type: ignore[arg-type]
        response = await client.post(f"/characters/{cid}/resynthesize")
        assert response.status == 200
        assert await response.json() == {"id": cid, "status": "ready"}
        missing = await client.post("/characters/char_nope/resynthesize")
        assert missing.status == 502


# A user suite without pytest-asyncio settings is told to choose a fixture loop scope;
# run in this process, that deprecation warning would be reported by this suite too
# (where it surfaces depends on the pytest and pytest-asyncio versions: both ignore it).
USER_SUITE_WARNING = ('ignore:The configuration option "asyncio_default_fixture_loop_scope" '
                      "is unset:pytest.PytestDeprecationWarning")
USER_SUITE = ("-p", "asyncio", "-q", "-W", USER_SUITE_WARNING)


@pytest.mark.filterwarnings(USER_SUITE_WARNING)
def test_pytest_example_passes_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_example=examples("pytest")[0])
    result = pytester.runpytest_inprocess(*USER_SUITE)
    result.assert_outcomes(passed=2)


def test_redis_example_runs(fake: FakeAurousServer, redis_url: str) -> None:
    cid = fake.add_character()
    result = subprocess.run([sys.executable, "-c", examples("redis")[0]],
                            env=env_for(fake, CHARACTER_ID=cid, REDIS_URL=redis_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "synthesizing"


@pytest.mark.filterwarnings(USER_SUITE_WARNING)
def test_fastapi_example_passes_with_the_fixture(pytester: pytest.Pytester) -> None:
    """The FastAPI app returns models as JSON and streams queued-then-each-status, tested
    with the fake_aurous fixture as its README says."""
    pytester.makepyfile(test_fastapi_example=examples("fastapi")[0])
    result = pytester.runpytest_inprocess(*USER_SUITE)
    result.assert_outcomes(passed=2)


def test_journal_example_resumes_from_the_journal(fake: FakeAurousServer, in_process: Any,
                                                  tmp_path: Path) -> None:
    ids = [fake.add_character() for _ in range(3)]
    env = {"CHARACTER_IDS": ",".join(ids), "JOURNAL": str(tmp_path / "refresh.db")}
    runs = [in_process(examples("journal")[0], **env) for _ in range(2)]
    assert all("Traceback" not in err for _, err in runs), [err for _, err in runs]
    first, second = (out.splitlines() for out, _ in runs)
    assert len(first) == len(second) == 3
    assert not any("(journal)" in line for line in first)
    assert all(line.endswith("(journal)") for line in second)
    assert len(fake.ledger) == 3  # the second run charged nothing
