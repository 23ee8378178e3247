"""Every example in README.md runs, against the fake server, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("index", range(3))
def test_script_examples_run(fake: FakeAurousServer, index: int) -> None:
    ids = [fake.add_character(name=f"seed {i}") for i in range(4)]
    result = subprocess.run([sys.executable, "-c", examples("script")[index]],
                            env=env_for(fake, CHARACTER_ID=ids[0]), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip()
    assert fake.rate_limited == {}


async def test_web_example_serves_a_resynthesize(fake: FakeAurousServer,
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


def test_pytest_example_passes_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_example=examples("pytest")[0])
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    result.assert_outcomes(passed=2)


def test_redis_example_runs(fake: FakeAurousServer, redis_url: str) -> None:
    cid = fake.add_character()
    result = subprocess.run([sys.executable, "-c", examples("redis")[0]],
                            env=env_for(fake, CHARACTER_ID=cid, REDIS_URL=redis_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "synthesizing"


def test_fastapi_example_passes_with_the_fixture(pytester: pytest.Pytester) -> None:
    """The FastAPI app returns models as JSON and streams queued-then-each-status, tested
    with the fake_aurous fixture as its README says."""
    pytester.makepyfile(test_fastapi_example=examples("fastapi")[0])
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    result.assert_outcomes(passed=2)


def test_journal_example_resumes_from_the_journal(fake: FakeAurousServer,
                                                  tmp_path: Path) -> None:
    ids = [fake.add_character() for _ in range(3)]
    env = env_for(fake, CHARACTER_IDS=",".join(ids), JOURNAL=str(tmp_path / "refresh.db"))
    runs = [subprocess.run([sys.executable, "-c", examples("journal")[0]], env=env,
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    first, second = (run.stdout.splitlines() for run in runs)
    assert len(first) == len(second) == 3
    assert not any("(journal)" in line for line in first)
    assert all(line.endswith("(journal)") for line in second)
    assert len(fake.ledger) == 3  # the second run charged nothing
