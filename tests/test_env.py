"""Settings from the environment: AUROUS_TIMEOUT, AUROUS_MAX_RETRIES, the plain-HTTP
opt-in and AUROUS_LOG (issue 16, items 3 and 5; issue 17, the opt-in)."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

import aurous_async as aa
from aurous_async import _logging
from aurous_async._config import build_config
from aurous_async.testing import FakeAurousServer, Fault, FaultKind

KEY = "al_live_" + "ef" * 16
SECRETS = (KEY, "s3cr3t-token", "whsec_" + "k" * 24)
ENV = ("AUROUS_TIMEOUT", "AUROUS_MAX_RETRIES", "AUROUS_ALLOW_INSECURE_HTTP", "AUROUS_LOG",
       "AUROUS_BASE_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without the SDK's variables."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sdk_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The ``aurous_async`` logger, put back as it was (level, handlers) afterwards."""
    logger = logging.getLogger("aurous_async")
    level, handlers = logger.level, list(logger.handlers)
    monkeypatch.setattr(_logging, "_warned_about", set())
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


# -- AUROUS_TIMEOUT / AUROUS_MAX_RETRIES ---------------------------------------------------


def test_timeout_and_retries_come_from_the_environment_when_not_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect guarded: the variables ignored (the defaults used instead)."""
    monkeypatch.setenv("AUROUS_TIMEOUT", " 12.5 ")
    monkeypatch.setenv("AUROUS_MAX_RETRIES", "0")
    config = build_config(KEY, None, None)
    assert (config.timeout, config.max_retries) == (12.5, 0)
    assert build_config(KEY, None, None, None, None).timeout == 12.5


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect guarded: the environment overriding what the code asked for."""
    monkeypatch.setenv("AUROUS_TIMEOUT", "12.5")
    monkeypatch.setenv("AUROUS_MAX_RETRIES", "7")
    config = build_config(KEY, None, None, 60.0, 3)
    assert (config.timeout, config.max_retries) == (60.0, 3)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_blank_means_the_defaults(monkeypatch: pytest.MonkeyPatch,
                                           value: str | None) -> None:
    """Defect guarded: ``export AUROUS_TIMEOUT=`` refused, or unset meaning no timeout."""
    if value is not None:
        monkeypatch.setenv("AUROUS_TIMEOUT", value)
        monkeypatch.setenv("AUROUS_MAX_RETRIES", value)
    config = build_config(KEY, None, None)
    assert (config.timeout, config.max_retries) == (60.0, 3)


@pytest.mark.parametrize(("name", "value"), [
    ("AUROUS_TIMEOUT", "abc"), ("AUROUS_TIMEOUT", "0"), ("AUROUS_TIMEOUT", "-5"),
    ("AUROUS_TIMEOUT", "nan"), ("AUROUS_TIMEOUT", "inf"), ("AUROUS_TIMEOUT", "30s"),
    ("AUROUS_MAX_RETRIES", "1.5"), ("AUROUS_MAX_RETRIES", "-1"),
    ("AUROUS_MAX_RETRIES", "three"),
])
def test_an_invalid_value_is_an_error_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Defect guarded: a typo silently replaced by the default (or a bare ValueError from
    ``float()`` that names nothing)."""
    monkeypatch.setenv(name, value)
    with pytest.raises(aa.ConfigurationError, match=f"^{name} must be .*{re.escape(repr(value))}$"):
        build_config(KEY, None, None)


def test_with_options_validates_and_keeps_the_rest() -> None:
    """Defect guarded: a per-call view with an unchecked timeout, or one that drops the
    other settings."""
    config = build_config(KEY, None, "2026-05-15", 30.0, 2)
    changed = config.with_options(timeout=5)
    assert (changed.timeout, changed.max_retries, changed.api_key) == (5.0, 2, KEY)
    assert changed.aurous_version == "2026-05-15"
    assert config.with_options(max_retries=0).max_retries == 0
    assert config.with_options() == config
    with pytest.raises(aa.ConfigurationError):
        config.with_options(timeout=-1)
    with pytest.raises(TypeError):
        config.with_options(max_retries=2.5)  # type: ignore[arg-type]


# -- the plain-HTTP opt-in -------------------------------------------------------------------


def test_plain_http_to_another_host_is_refused_with_the_opt_in_named() -> None:
    """Defect guarded: a refusal that leaves a docker-compose user no way forward."""
    with pytest.raises(aa.ConfigurationError) as info:
        aa.AurousSession(KEY, base_url="http://fake-aurous:8080")
    assert "allow_insecure_http=True" in str(info.value)
    assert "AUROUS_ALLOW_INSECURE_HTTP=1" in str(info.value)


@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_the_opt_in_switched_off_still_refuses(monkeypatch: pytest.MonkeyPatch,
                                               value: str) -> None:
    """Defect guarded: any value of the variable (even ``0``) letting plain HTTP in."""
    monkeypatch.setenv("AUROUS_ALLOW_INSECURE_HTTP", value)
    with pytest.raises(aa.ConfigurationError, match="allow_insecure_http"):
        aa.AurousSession(KEY, base_url="http://fake-aurous:8080")


def test_the_env_opt_in_allows_plain_http_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Defect guarded: plain HTTP to a remote host allowed silently."""
    monkeypatch.setenv("AUROUS_ALLOW_INSECURE_HTTP", "1")
    with caplog.at_level(logging.WARNING, logger="aurous_async"):
        session = aa.AurousSession(KEY, base_url="http://fake-aurous:8080/v1")
    assert session.base_url == "http://fake-aurous:8080"
    [record] = [r for r in caplog.records if r.name == "aurous_async"]
    assert record.levelno == logging.WARNING
    assert "INSECURE" in record.getMessage() and "fake-aurous" in record.getMessage()
    assert KEY not in caplog.text


def test_the_keyword_opt_in_allows_plain_http_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """Defect guarded: the keyword the session passes being ignored."""
    with caplog.at_level(logging.WARNING, logger="aurous_async"):
        config = build_config(KEY, "http://10.0.0.7:8080", None, allow_insecure_http=True)
    assert config.base_url == "http://10.0.0.7:8080"
    assert "INSECURE" in caplog.text and "10.0.0.7" in caplog.text
    with pytest.raises(TypeError):
        build_config(KEY, None, None, allow_insecure_http="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["https://api.aurous-labs.com", "http://127.0.0.1:8080"])
def test_the_opt_in_warns_only_when_it_is_used(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str) -> None:
    """Defect guarded: a warning on every session of a process that merely has the
    variable set, which teaches people to ignore it."""
    monkeypatch.setenv("AUROUS_ALLOW_INSECURE_HTTP", "1")
    with caplog.at_level(logging.WARNING, logger="aurous_async"):
        build_config(KEY, url, None)
    assert caplog.records == []


def test_the_opt_in_still_refuses_credentials_in_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect guarded: the opt-in skipping the other base_url checks."""
    monkeypatch.setenv("AUROUS_ALLOW_INSECURE_HTTP", "1")
    with pytest.raises(aa.ConfigurationError, match="credentials"):
        build_config(KEY, "http://user:pw@fake-aurous:8080", None)


def test_an_unreadable_opt_in_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect guarded: ``AUROUS_ALLOW_INSECURE_HTTP=please`` read as on or as off."""
    monkeypatch.setenv("AUROUS_ALLOW_INSECURE_HTTP", "please")
    with pytest.raises(aa.ConfigurationError, match=r"^AUROUS_ALLOW_INSECURE_HTTP must be"):
        build_config(KEY, "https://api.aurous-labs.com", None)


# -- AUROUS_LOG --------------------------------------------------------------------------------


def test_unset_leaves_the_logger_alone(sdk_logger: logging.Logger,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Defect guarded: the SDK configuring logging for an app that did not ask."""
    before = (sdk_logger.level, list(sdk_logger.handlers))
    _logging.setup_logging_from_env()
    assert (sdk_logger.level, list(sdk_logger.handlers)) == before
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("value", "level"), [
    ("debug", logging.DEBUG), ("INFO", logging.INFO), (" Warning ", logging.WARNING),
])
def test_a_level_is_set_with_one_stderr_handler_however_often_called(
        monkeypatch: pytest.MonkeyPatch, sdk_logger: logging.Logger, value: str,
        level: int) -> None:
    """Defect guarded: every call (every import, every session) adding a handler, so
    each line shows up twice, three times…; or the value read case-sensitively."""
    monkeypatch.setenv("AUROUS_LOG", value)
    _logging.setup_logging_from_env()
    _logging.setup_logging_from_env()
    assert sdk_logger.level == level
    assert sum(isinstance(h, _logging._EnvHandler) for h in sdk_logger.handlers) == 1


def test_a_second_call_updates_the_level(monkeypatch: pytest.MonkeyPatch,
                                         sdk_logger: logging.Logger) -> None:
    """Defect guarded: the first setting sticking for good."""
    monkeypatch.setenv("AUROUS_LOG", "warning")
    _logging.setup_logging_from_env()
    monkeypatch.setenv("AUROUS_LOG", "debug")
    _logging.setup_logging_from_env()
    assert sdk_logger.level == logging.DEBUG


def test_an_unknown_value_warns_once_and_never_raises(
        monkeypatch: pytest.MonkeyPatch, sdk_logger: logging.Logger,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Defect guarded: a typo in a logging switch stopping the program, or nagging on
    every call."""
    monkeypatch.setenv("AUROUS_LOG", "verbose")
    before = (sdk_logger.level, list(sdk_logger.handlers))
    _logging.setup_logging_from_env()
    _logging.setup_logging_from_env()
    err = capsys.readouterr().err
    assert err.count("AUROUS_LOG='verbose'") == 1 and "debug, info or warning" in err
    assert (sdk_logger.level, list(sdk_logger.handlers)) == before


def test_the_handler_redacts_secrets_in_messages_and_tracebacks(
        monkeypatch: pytest.MonkeyPatch, sdk_logger: logging.Logger,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Defect guarded: a secret that some code path logs unredacted reaching stderr."""
    monkeypatch.setenv("AUROUS_LOG", "debug")
    _logging.setup_logging_from_env()
    sdk_logger.debug("key %s url %s", KEY, "https://cdn.example/f.png?token=s3cr3t-token")
    try:
        raise RuntimeError(f"signing with {SECRETS[2]}")
    except RuntimeError:
        sdk_logger.exception("webhook check failed")
    err = capsys.readouterr().err
    assert "DEBUG aurous_async: key al_live_… url https://cdn.example/f.png?token=…" in err
    assert "RuntimeError: signing with whsec_…" in err
    assert not [secret for secret in SECRETS if secret in err]


def test_the_handler_writes_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch,
                                                 sdk_logger: logging.Logger) -> None:
    """Defect guarded: lines written to the stream that was stderr when the handler was
    made (set up at import, then stderr redirected: the lines vanish or hit a closed
    file)."""
    monkeypatch.setenv("AUROUS_LOG", "warning")
    _logging.setup_logging_from_env()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    sdk_logger.warning("after the redirect")
    assert later.getvalue().endswith(" WARNING aurous_async: after the redirect\n")


async def test_debug_shows_each_attempt_and_warning_the_retries(
        monkeypatch: pytest.MonkeyPatch, sdk_logger: logging.Logger,
        capsys: pytest.CaptureFixture[str], sfake: FakeAurousServer,
        session: aa.AurousSession) -> None:
    """Defect guarded: ``AUROUS_LOG`` set and nothing the SDK logs reaching stderr (the
    README promises these lines)."""
    monkeypatch.setenv("AUROUS_LOG", "debug")
    _logging.setup_logging_from_env()
    character_id = sfake.add_character()
    sfake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/characters/{character_id}",
                           times=1))
    await session.characters.get(character_id)
    lines = capsys.readouterr().err.splitlines()
    assert any(f"WARNING aurous_async: GET /v1/characters/{character_id}:" in line
               and "retrying in" in line for line in lines)
    assert any(f"DEBUG aurous_async: GET /v1/characters/{character_id} -> 503 " in line
               and "attempt=1" in line for line in lines)
    assert any(f"DEBUG aurous_async: GET /v1/characters/{character_id} -> 200 " in line
               and "attempt=2" in line for line in lines)
    assert not any(sfake.api_key in line for line in lines)


def test_in_a_fresh_process() -> None:
    """Defect guarded: the variable working only in this test process's set-up (a real
    program reads it at start-up, with nothing configured before)."""
    code = ("import logging; from aurous_async._logging import setup_logging_from_env; "
            "setup_logging_from_env(); log = logging.getLogger('aurous_async'); "
            "log.debug('hidden'); log.info('shown %s', 'al_live_abcdefghijklmnop')")
    env = {**os.environ, "AUROUS_LOG": "info"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.endswith(" INFO aurous_async: shown al_live_…")
