"""Session settings from arguments and the environment, validated once.

An argument left out (``None``) is read from the environment: ``AUROUS_API_KEY``,
``AUROUS_BASE_URL``, ``AUROUS_TIMEOUT`` (seconds, 60 by default), ``AUROUS_MAX_RETRIES``
(3 by default) and ``AUROUS_ALLOW_INSECURE_HTTP``. A value that is set but invalid is a
:class:`ConfigurationError` naming the variable, never silently the default.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import platform
import re
from datetime import date

import aiohttp
import attrs
from yarl import URL

from ._errors import ConfigurationError
from ._redact import key_hint
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "Config",
    "build_config",
    "is_loopback",
]

DEFAULT_BASE_URL = "https://api.aurous-labs.com"
#: Seconds one attempt may take, when neither ``timeout=`` nor ``AUROUS_TIMEOUT`` says.
DEFAULT_TIMEOUT = 60.0
#: Retries of a failed attempt, when neither ``max_retries=`` nor ``AUROUS_MAX_RETRIES``
#: says.
DEFAULT_MAX_RETRIES = 3
_INSECURE_ENV = "AUROUS_ALLOW_INSECURE_HTTP"
logger = logging.getLogger("aurous_async")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Header values must not smuggle a second header or a line break.
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")


@attrs.frozen
class Config:
    """Validated session settings. The key never shows in ``repr``."""

    api_key: str = attrs.field(repr=lambda key: repr(key_hint(key)))
    base_url: str
    aurous_version: str | None
    timeout: float
    max_retries: int
    user_agent: str

    def with_options(self, *, timeout: float | None = None,
                     max_retries: int | None = None) -> Config:
        """A copy with the given settings changed (validated as :func:`build_config`
        does; ``None`` keeps this config's value)."""
        return attrs.evolve(
            self,
            timeout=self.timeout if timeout is None else _timeout(timeout),
            max_retries=self.max_retries if max_retries is None else _max_retries(max_retries),
        )


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` and ``::1`` — the hosts that may use ``http://``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_config(
    api_key: str | None,
    base_url: str | None,
    aurous_version: str | None,
    timeout: float | None = None,
    max_retries: int | None = None,
    *,
    allow_insecure_http: bool = False,
) -> Config:
    """Validate every setting, reading the environment for the ones not given (``None``);
    raises :class:`ConfigurationError` (a ``ValueError``) or ``TypeError`` before any
    request is made.

    ``allow_insecure_http`` (or ``AUROUS_ALLOW_INSECURE_HTTP=1``) lets ``base_url`` use
    ``http://`` for a host that is not loopback, such as a fake server in another
    container; the key then travels in clear text, so a warning is logged.
    """
    if not isinstance(allow_insecure_http, bool):
        raise TypeError("allow_insecure_http must be a bool")
    return Config(
        api_key=_api_key(api_key),
        base_url=_base_url(base_url, allow_insecure_http or _env_flag(_INSECURE_ENV)),
        aurous_version=_aurous_version(aurous_version),
        timeout=_timeout(timeout),
        max_retries=_max_retries(max_retries),
        user_agent=f"aurous-async/{__version__} python/{platform.python_version()} "
                   f"aiohttp/{aiohttp.__version__}",
    )


def _api_key(value: str | None) -> str:
    if value is None:
        value = os.environ.get("AUROUS_API_KEY")
        if not value:
            raise ConfigurationError(
                "no API key: pass api_key=... or set the AUROUS_API_KEY environment variable"
            )
    if not isinstance(value, str):
        raise TypeError(f"api_key must be a str, not {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ConfigurationError("api_key is empty")
    if not _HEADER_SAFE.match(value):
        raise ConfigurationError("api_key contains spaces or control characters")
    return value


def _base_url(value: str | None, insecure_allowed: bool) -> str:
    if value is None:
        value = os.environ.get("AUROUS_BASE_URL") or DEFAULT_BASE_URL
    if not isinstance(value, str):
        raise TypeError(f"base_url must be a str, not {type(value).__name__}")
    try:
        url = URL(value.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"base_url is not a URL: {exc}") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise ConfigurationError("base_url must be an absolute http(s) URL with a host")
    insecure = url.scheme == "http" and not is_loopback(url.host)
    if insecure and not insecure_allowed:
        raise ConfigurationError(
            "base_url uses http:// for a non-loopback host; the API key would travel in "
            "clear text. Use https:// (http:// is allowed only for localhost, 127.0.0.0/8, "
            "::1). For a test server only, opt in with allow_insecure_http=True or "
            f"{_INSECURE_ENV}=1"
        )
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigurationError("base_url must not carry credentials, a query or a fragment")
    if insecure:
        logger.warning(
            "INSECURE: plain http:// to %s was allowed (allow_insecure_http / %s); the API "
            "key and every response travel unencrypted. Use this only for a test server.",
            url.host, _INSECURE_ENV,
        )
    path = url.path.rstrip("/")
    # Accept the OpenAI-style ".../v1" too: every path we send starts with /v1.
    path = path.removesuffix("/v1")
    return str(url.with_path(path or "/")).rstrip("/")


def _aurous_version(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"aurous_version must be a str, not {type(value).__name__}")
    if not _VERSION_RE.match(value):
        raise ConfigurationError(f"aurous_version must look like YYYY-MM-DD, got {value!r}")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"aurous_version is not a real date: {value!r}") from None
    return value


def _env(name: str) -> str | None:
    """The variable's value, ``None`` when unset or blank (``export X=`` unsets it)."""
    return os.environ.get(name, "").strip() or None


def _env_flag(name: str) -> bool:
    raw = _env(name)
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise ConfigurationError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), "
                             f"got {raw[:40]!r}")


def _timeout(value: float | None) -> float:
    if value is None:
        raw = _env("AUROUS_TIMEOUT")
        if raw is None:
            return DEFAULT_TIMEOUT
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigurationError(
                f"AUROUS_TIMEOUT must be a positive number of seconds, got {raw[:40]!r}"
            )
        return seconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _max_retries(value: int | None) -> int:
    if value is None:
        raw = _env("AUROUS_MAX_RETRIES")
        if raw is None:
            return DEFAULT_MAX_RETRIES
        try:
            retries = int(raw)
        except ValueError:
            retries = -1
        if retries < 0:
            raise ConfigurationError(
                f"AUROUS_MAX_RETRIES must be a whole number >= 0, got {raw[:40]!r}"
            )
        return retries
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_retries must be an int, not {type(value).__name__}")
    if value < 0:
        raise ConfigurationError(f"max_retries must be >= 0, got {value!r}")
    return value
