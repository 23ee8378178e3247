"""Session settings from arguments and the environment, validated once."""

from __future__ import annotations

import ipaddress
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

__all__ = ["DEFAULT_BASE_URL", "Config", "build_config", "is_loopback"]

DEFAULT_BASE_URL = "https://api.aurous-labs.com"
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
    timeout: float,
    max_retries: int,
) -> Config:
    """Validate every setting, reading ``AUROUS_API_KEY`` / ``AUROUS_BASE_URL`` for the
    ones not given; raises :class:`ConfigurationError` (a ``ValueError``) or
    ``TypeError`` before any request is made."""
    return Config(
        api_key=_api_key(api_key),
        base_url=_base_url(base_url),
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


def _base_url(value: str | None) -> str:
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
    if url.scheme == "http" and not is_loopback(url.host):
        raise ConfigurationError(
            "base_url uses http:// for a non-loopback host; the API key would travel in "
            "clear text. Use https:// (http:// is allowed only for localhost, 127.0.0.0/8, ::1)"
        )
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigurationError("base_url must not carry credentials, a query or a fragment")
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


def _timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _max_retries(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_retries must be an int, not {type(value).__name__}")
    if value < 0:
        raise ConfigurationError(f"max_retries must be >= 0, got {value!r}")
    return value
