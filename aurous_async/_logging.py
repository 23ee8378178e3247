"""``AUROUS_LOG``: switching the SDK's log lines on from the environment.

``AUROUS_LOG=debug`` (or ``info``, ``warning``; any case) sets the level of the
``aurous_async`` logger and gives it one handler writing to stderr. Unset, nothing is
touched: an application that configures logging itself keeps full control.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from ._redact import redact

__all__ = ["ENV_VAR", "LOGGER_NAME", "RedactingFilter", "setup_logging_from_env"]

#: The environment variable read by :func:`setup_logging_from_env`.
ENV_VAR = "AUROUS_LOG"
#: The logger every part of the SDK logs to.
LOGGER_NAME = "aurous_async"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_warned_about: set[str] = set()


class RedactingFilter(logging.Filter):
    """Removes API keys, signed-URL tokens and ``whsec_`` secrets from a record.

    What the SDK logs is redacted where it is written; this is the last line of defence
    for the stderr handler. The record is changed in place, so handlers that see it after
    this one (the root logger's) get the redacted text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` (message, exception and stack text); never drops it."""
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _EnvHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``AUROUS_LOG`` adds; its class marks it, so it is added only once.

    It writes to whatever ``sys.stderr`` is when a line is logged (not when it was made),
    as Python's own last-resort handler does, so a redirected stderr gets the lines.
    """

    def __init__(self) -> None:
        # Handler's, not StreamHandler's __init__: that one would assign the stream,
        # which is a property here (as in logging's own _StderrHandler).
        logging.Handler.__init__(self)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.addFilter(RedactingFilter())

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr


def setup_logging_from_env() -> None:
    """Configure the ``aurous_async`` logger from ``AUROUS_LOG``, if it is set.

    ``debug``, ``info`` or ``warning`` (any case) set the logger's level and add one
    stderr handler (once, however often this is called; a second call only updates
    the level). Another value is reported once on stderr and otherwise ignored: a typo
    in a logging switch must not stop a program.
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return
    level = _LEVELS.get(raw.lower())
    if level is None:
        if raw not in _warned_about:
            _warned_about.add(raw)
            print(f"aurous-async: ignoring {ENV_VAR}={redact(raw[:40])!r}: use debug, info "
                  "or warning", file=sys.stderr)
        return
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(isinstance(handler, _EnvHandler) for handler in logger.handlers):
        logger.addHandler(_EnvHandler())
