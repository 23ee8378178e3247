"""Argument parsing, the commands of ``aurous-async``, and how a run ends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from .. import AurousError, Character, CharacterStatus, Clock, StatusUpdate, __version__
from ..testing.__main__ import add_arguments as fake_server_arguments
from ..testing.__main__ import serve as serve_fake
from . import _output
from ._batch import show as show_batch
from ._charges import ChargeLedger
from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    error_line,
    exit_code,
    open_session,
)
from ._journaled import resume_command
from ._resynthesize import resynthesize


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``aurous-async`` and its subcommands."""
    parser = _Parser(
        prog="aurous-async",
        description="Resynthesize and inspect Aurous characters from the shell.",
        epilog="Exit codes: 0 ok, 1 a character failed, 2 usage/configuration error, "
               "3 API error, 4 timeout, 130 interrupted, 141 output pipe closed.",
    )
    parser.add_argument("--version", action="version", version=f"aurous-async {__version__}")
    logs = _Parser(add_help=False)
    logs.add_argument("-v", "--verbose", action="store_true",
                      help="show the SDK's warnings (its retries) on stderr")
    common = _Parser(add_help=False, parents=[logs])
    common.add_argument("--api-key", help="API key (default: $AUROUS_API_KEY)")
    common.add_argument("--base-url", help="API base URL (default: $AUROUS_BASE_URL or "
                        "https://api.aurous-labs.com)")
    common.add_argument("--json", action="store_true",
                        help="one JSON object per line on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("get", parents=[common], help="show one character")
    p.add_argument("id")
    p = sub.add_parser("list", parents=[common], help="list the team's characters")
    p.add_argument("--limit", type=_whole(1), default=None,
                   help="print at most N characters (default: all)")
    p.add_argument("--page-size", type=_whole(1, 100), default=None,
                   help="characters per request to the API (1-100)")
    p = sub.add_parser("save", parents=[common], help="accept a reviewing character")
    p.add_argument("id")
    p = sub.add_parser("watch", parents=[common], help="follow a character to a final state")
    p.add_argument("id")
    p.add_argument("--auto-save", action="store_true", help="save it when it reaches reviewing")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="give up after S seconds")

    p = sub.add_parser(
        "resynthesize", parents=[common], help="resynthesize characters (paid)",
        description="Resynthesize characters (paid). Without --watch they are sent one by "
                    "one and the first error stops the run; with it they fan out, and one "
                    "character's failure stops only that one (a 402 stops the sending). "
                    "Every run ends with what was charged, what was not sent and what is "
                    "left unsaved (on stderr with --json). With --journal the run is a "
                    "batch recorded in a file: running the same command again (or the one "
                    "printed when it stops) resumes it and charges no character twice.",
    )
    which = p.add_argument_group("which characters")
    which.add_argument("ids", nargs="*", metavar="ID", help="character ids")
    which.add_argument("--ids-file", metavar="FILE",
                       help="more ids, one per line (# comments, blank lines skipped; - is "
                            "stdin)")
    how = p.add_argument_group("how")
    how.add_argument("--force-all", action="store_true", help="send force_all: true")
    how.add_argument("--watch", action="store_true", help="follow each to a final state")
    how.add_argument("--auto-save", action="store_true",
                     help="save each when it reaches reviewing (implies --watch)")
    how.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                     help="give up after S seconds")
    durable = p.add_argument_group("a batch that survives restarts")
    durable.add_argument("--journal", metavar="PATH",
                         help="record the run in this SQLite file (made if missing); implies "
                              "--watch. Re-running resumes: finished ids are read from it, "
                              "charged ones only followed, none charged twice. Without ids, "
                              "the batch's own ids are resumed. A batch held by another "
                              "runner is waited for until its lease lapses (a runner that "
                              "died stops renewing it, 30 s at most); a live one ends the "
                              "command (exit 2)")
    durable.add_argument("--batch", metavar="NAME",
                         help="the batch's name in the journal (default: the --ids-file "
                              "name without its extension; required for ids given as "
                              "arguments or on stdin, or for none)")

    p = sub.add_parser("batch", help="inspect the batches of a journal (no API call)")
    batch_sub = p.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")
    p = batch_sub.add_parser(
        "show", help="each id's outcome and the count per state",
        description="Show a batch of a --journal file without its lease (safe while it "
                    "runs): a line of counts per state, then each id (state, status, "
                    "charged yes/no/maybe, error). --json: one object per id, then a "
                    'summary object {"batch", "journal", "total", "counts"}. Without '
                    "--batch a journal with one batch shows it; with several, their "
                    "names are listed and the command exits 2.",
    )
    p.add_argument("path", metavar="PATH", help="the journal file")
    p.add_argument("--batch", metavar="NAME", help="the batch to show")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")

    p = sub.add_parser("demo", parents=[logs],
                       help="see the SDK fan out on the embedded fake server")
    p.add_argument("--characters", type=_whole(1), default=30, help="how many (default 30)")
    p.add_argument("--time-scale", type=_seconds, default=20.0,
                   help="API seconds per real second (default 20)")
    p.add_argument("--no-live", action="store_true", help="plain lines instead of a live view")

    p = sub.add_parser(
        "fake-server", help="run the fake Aurous API for integration tests",
        description="Run the fake Aurous API until interrupted (the same as python -m "
                    "aurous_async.testing). Its control API is under /_fake/.",
    )
    fake_server_arguments(p)
    return parser


async def _get(args: argparse.Namespace) -> int:
    async with open_session(args) as s:
        character = await s.characters.get(args.id)
    _show(args, character)
    return EXIT_OK


async def _save(args: argparse.Namespace) -> int:
    async with open_session(args) as s:
        character = await s.characters.save(args.id)
    _show(args, character)
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    table = not args.json and _output.console() is not None
    kept: list[Character] = []  # a terminal table needs every row first; pipes stream
    printed = 0
    async with open_session(args) as s:
        async for character in s.characters.list(limit=args.page_size):
            if table:
                kept.append(character)
            elif args.json:
                _output.print_json(_output.to_json(character))
            else:
                _output.print_row(character)
            printed += 1
            if printed == args.limit:
                break  # before the iterator asks for a page nobody will print
    if table:
        _output.print_characters(kept)
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    async with open_session(args) as s:
        last: CharacterStatus | None = None
        async for update in s.characters.watch(args.id, auto_save=args.auto_save,
                                               timeout=args.timeout):
            last = update.status
            _show_update(args, update)
    return EXIT_FAILED if last == CharacterStatus.FAILED else EXIT_OK


def _show(args: argparse.Namespace, character: Character) -> None:
    if args.json:
        _output.print_json(_output.to_json(character))
    else:
        _output.print_characters([character])


def _show_update(args: argparse.Namespace, update: StatusUpdate) -> None:
    if args.json:
        _output.print_json(_output.to_json(update))
    else:
        _output.print_update(update)


_COMMANDS = {"get": _get, "list": _list, "save": _save, "watch": _watch}


@contextlib.contextmanager
def _sdk_logging(verbose: bool) -> Iterator[None]:
    """Show the SDK's log lines on stderr for one run: errors always, warnings (the
    retries) with ``-v``. Python's last-resort handler would print every warning, so the
    logger gets a handler of its own and stops propagating until the run ends."""
    logger = logging.getLogger("aurous_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aurous-async: %(levelname)s: %(message)s"))
    saved = logger.level, logger.propagate
    logger.setLevel(logging.WARNING if verbose else logging.ERROR)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit code; an error ends it in one line on stderr, never a traceback."""
    try:
        code = run()
        sys.stdout.flush()  # a reader gone (`| head`) shows here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (AurousError, ValueError, TypeError) as exc:
        # Code, message and request id are in the line. (ValueError/TypeError are the
        # SDK's argument checks, made before any request.)
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return exit_code(exc)


def _silence_stdout() -> None:
    """The reader of stdout went away: point stdout at the null device, or the
    interpreter's flush at exit fails on the same pipe ("Exception ignored ...")."""
    with contextlib.suppress(OSError, ValueError):  # not a file (captured, redirected)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _run_resynthesize(args: argparse.Namespace) -> int:
    ledger = ChargeLedger(journaled=args.journal is not None)
    code = _guarded(lambda: asyncio.run(resynthesize(args, ledger)))
    if not ledger:
        return code  # stopped before it knew its ids: nothing can have been sent
    summary = ledger.summary()
    # A stopped journaled batch says how to go on (not after a usage error: the same
    # mistake would stop the resumed run): last on a terminal, but before the JSON
    # summary, which stays the last line of stderr with --json.
    resume = (f"resume with: {resume_command(args)}"
              if args.journal is not None and code != EXIT_USAGE
              and (code == EXIT_INTERRUPTED or summary.resumable) else None)
    if not args.json and code != EXIT_BROKEN_PIPE:

        def on_stdout() -> int:
            summary.write(sys.stdout, as_json=False)
            return code

        code = _guarded(on_stdout)
    if resume is not None and args.json:
        print(resume, file=sys.stderr, flush=True)
    if args.json or code == EXIT_BROKEN_PIPE:
        # Stdout is for the JSON objects alone, or its reader is gone: charges are never
        # hidden, so the summary goes to stderr.
        summary.write(sys.stderr, as_json=args.json)
    if resume is not None and not args.json:
        print(resume, file=sys.stderr, flush=True)
    return code


def _run(args: argparse.Namespace) -> int:
    if args.command == "resynthesize":
        return _run_resynthesize(args)
    if args.command == "batch":
        return _guarded(lambda: asyncio.run(show_batch(args)))
    if args.command == "demo":
        from ._demo import demo

        live = not args.no_live and sys.stdout.isatty()
        return _guarded(lambda: demo(args.characters, args.time_scale, live=live))
    if args.command == "fake-server":
        try:
            return asyncio.run(serve_fake(args))
        except KeyboardInterrupt:
            return EXIT_OK  # Ctrl-C is how a fake server is meant to stop
    command = _COMMANDS[args.command]
    return _guarded(lambda: asyncio.run(command(args)))


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return its exit
    code; the console script exits with it. ``--help``, ``--version`` and usage errors
    return too (0, 0 and 2) instead of raising ``SystemExit``.

    ``clock`` is the time every session of the command runs on (default: the system
    clock): a program driving the command line against a sped-up fake passes the fake's
    :class:`~aurous_async.ScaledClock`, so polls and backoff keep pace with it.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its help, version or usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.clock = clock
    with _sdk_logging(getattr(args, "verbose", False)):
        return _run(args)
