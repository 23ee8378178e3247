"""What every command shares: exit codes, the session, and one-line errors."""

from __future__ import annotations

import argparse
import os

import aurous_async

from .. import (
    APITimeoutError,
    AurousError,
    AurousSession,
    ConfigurationError,
    JournalError,
    SynthesisFailedError,
    WatchTimeoutError,
)
from .._batch_journal import RecordedError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141

# Where the command line takes each setting from, in the words of the shell.
_SETTING_SOURCES = {
    "api_key": "--api-key or AUROUS_API_KEY",
    "base_url": "--base-url or AUROUS_BASE_URL",
}


class UsageError(Exception):
    """A mistake on the command line found while running a command (exit 2)."""


def open_session(args: argparse.Namespace) -> AurousSession:
    """The session for ``args``, its configuration errors phrased for the shell."""
    try:
        return AurousSession(args.api_key, base_url=args.base_url, clock=args.clock)
    except ConfigurationError as exc:
        if args.api_key is None and not os.environ.get("AUROUS_API_KEY"):
            raise UsageError("no API key: pass --api-key KEY or set AUROUS_API_KEY") from None
        # The SDK names the keyword argument first ("base_url must ..."): say where the
        # command line took that value from.
        message = str(exc)
        setting = message.split(" ", 1)[0]
        source = _SETTING_SOURCES.get(setting)
        raise UsageError(f"{message} (from {source})" if source else message) from None


def error_line(error: BaseException | None) -> str:
    """``Type: message`` of an error, for one line of output."""
    return f"{type(error).__name__}: {error}"


def describe_error(error: BaseException) -> str:
    """:func:`error_line`, except for an outcome read from a journal, whose message
    already starts with the class of the original error."""
    return str(error) if isinstance(error, RecordedError) else error_line(error)


def exit_code(error: BaseException) -> int:
    """The exit code an error ends the command line with. An outcome read from a
    journal ends it as the original error did."""
    kind: type[BaseException] = type(error)
    if isinstance(error, RecordedError):
        name = error.error_class or ""
        original = getattr(aurous_async, name) if name in aurous_async.__all__ else None
        if isinstance(original, type) and issubclass(original, AurousError):
            kind = original
    if issubclass(kind, (WatchTimeoutError, APITimeoutError)):
        return EXIT_TIMEOUT
    if issubclass(kind, (ConfigurationError, UsageError, ValueError, TypeError,
                         JournalError)):
        return EXIT_USAGE
    if issubclass(kind, SynthesisFailedError):
        return EXIT_FAILED
    return EXIT_API
