"""Argument parsing and the commands of ``aurous-async``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from .._errors import (
    APITimeoutError,
    AurousError,
    ConfigurationError,
    SynthesisFailedError,
    WatchTimeoutError,
)
from .._models import Character, CharacterStatus
from .._session import AurousSession
from .._version import __version__
from . import _output

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aurous-async",
        description="Resynthesize and inspect Aurous characters from the shell.",
        epilog="Exit codes: 0 ok, 1 a character failed, 2 usage/configuration error, "
               "3 API error, 4 timeout, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"aurous-async {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-key", help="API key (default: $AUROUS_API_KEY)")
    common.add_argument("--base-url", help="API base URL (default: $AUROUS_BASE_URL or "
                        "https://api.aurous-labs.com)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("get", parents=[common], help="show one character")
    p.add_argument("id")
    p = sub.add_parser("list", parents=[common], help="list the team's characters")
    p.add_argument("--limit", type=int, default=None, help="page size sent to the API (1-100)")
    p = sub.add_parser("save", parents=[common], help="accept a reviewing character")
    p.add_argument("id")
    p = sub.add_parser("watch", parents=[common], help="follow a character to a final state")
    p.add_argument("id")
    p.add_argument("--auto-save", action="store_true", help="save it when it reaches reviewing")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds")
    p = sub.add_parser("resynthesize", parents=[common], help="resynthesize characters")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--force-all", action="store_true", help="send force_all: true")
    p.add_argument("--auto-save", action="store_true", help="save each when it reaches reviewing")
    p.add_argument("--watch", action="store_true", help="follow each to a final state")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds")

    p = sub.add_parser("demo", help="see the SDK fan out on the embedded fake server")
    p.add_argument("--characters", type=int, default=30, help="how many (default 30)")
    p.add_argument("--time-scale", type=float, default=20.0,
                   help="API seconds per real second (default 20)")
    p.add_argument("--no-live", action="store_true", help="plain lines instead of a live view")

    p = sub.add_parser("fake-server", help="run the fake Aurous API for integration tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--synthesis-seconds", type=float, default=45.0)
    p.add_argument("--api-key", default=None, help="the default team's key (else minted)")
    p.add_argument("--credits", type=float, default=1000.0)
    return parser


def _session(args: argparse.Namespace) -> AurousSession:
    return AurousSession(args.api_key, base_url=args.base_url)


async def _get(args: argparse.Namespace) -> int:
    async with _session(args) as s:
        character = await s.characters.get(args.id)
    _show(args, [character])
    return EXIT_OK


async def _save(args: argparse.Namespace) -> int:
    async with _session(args) as s:
        character = await s.characters.save(args.id)
    _show(args, [character])
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    async with _session(args) as s:
        characters = [c async for c in s.characters.list(limit=args.limit)]
    if args.json:
        _output.print_json([_output.to_json(c) for c in characters])
    else:
        _output.print_characters(characters)
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    async with _session(args) as s:
        last: Character | None = None
        async for update in s.characters.watch(args.id, auto_save=args.auto_save,
                                               timeout=args.timeout):
            last = update.character
            _show_update(args, update)
    return EXIT_FAILED if last is not None and last.status == CharacterStatus.FAILED else EXIT_OK


async def _resynthesize(args: argparse.Namespace) -> int:
    force_all = True if args.force_all else None
    async with _session(args) as s:
        if len(args.ids) == 1 and args.watch:
            last: Character | None = None
            async for update in s.characters.resynthesize_and_watch(
                args.ids[0], force_all=force_all, auto_save=args.auto_save, timeout=args.timeout
            ):
                last = update.character
                _show_update(args, update)
            failed = last is not None and last.status == CharacterStatus.FAILED
            return EXIT_FAILED if failed else EXIT_OK
        if not args.watch:
            characters = [await s.characters.resynthesize(cid, force_all=force_all)
                          for cid in args.ids]
            _show(args, characters)
            return EXIT_OK
        worst = EXIT_OK
        async for result in s.characters.resynthesize_many(
            args.ids, force_all=force_all, auto_save=args.auto_save, timeout=args.timeout
        ):
            if args.json:
                _output.print_json({
                    "character_id": result.character_id,
                    "ok": result.ok,
                    "character": _output.to_json(result.character) if result.character else None,
                    "error": _error_line(result.error) if result.error else None,
                })
            elif result.ok:
                status = result.character.status.value if result.character else "?"
                print(f"{result.character_id}  {status}", flush=True)
            else:
                print(f"{result.character_id}  error: {_error_line(result.error)}", flush=True)
            if result.error is not None:
                worst = max(worst, _exit_code(result.error))
        return worst


def _show(args: argparse.Namespace, characters: list[Character]) -> None:
    if args.json:
        for character in characters:
            _output.print_json(_output.to_json(character))
    else:
        _output.print_characters(characters)


def _show_update(args: argparse.Namespace, update: Any) -> None:
    if args.json:
        _output.print_json(_output.to_json(update))
    else:
        _output.print_update(update)


def _error_line(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}"


def _exit_code(error: BaseException) -> int:
    if isinstance(error, (WatchTimeoutError, APITimeoutError)):
        return EXIT_TIMEOUT
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    if isinstance(error, SynthesisFailedError):
        return EXIT_FAILED
    return EXIT_API


_COMMANDS = {
    "get": _get,
    "list": _list,
    "save": _save,
    "watch": _watch,
    "resynthesize": _resynthesize,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import demo

            code = demo(args.characters, args.time_scale, live=not args.no_live
                        and sys.stdout.isatty())
        elif args.command == "fake-server":
            from ..testing.__main__ import serve

            asyncio.run(serve(args))
            code = EXIT_OK
        else:
            code = asyncio.run(_COMMANDS[args.command](args))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except (AurousError, ValueError, TypeError) as exc:
        # One clear line, never a traceback: code, message and request id are in it.
        # (ValueError/TypeError are the SDK's argument checks, made before any request.)
        code = _exit_code(exc) if isinstance(exc, AurousError) else EXIT_USAGE
        print(f"error: {_error_line(exc)}", file=sys.stderr)
    return code
