"""``python -m aurous_async.testing``: run the fake Aurous server standalone.

It prints, on stdout, a first line naming the base URL, then ``AUROUS_BASE_URL=`` and
``AUROUS_API_KEY=`` lines, then the ids of the ``--seed`` characters one per line
(unless ``--seed-file`` takes them). Hints go to stderr. A user error (a bad
``--fault``, a busy port) is one line on stderr and exit status 2.

The command line's ``aurous-async fake-server`` is the same thing: it calls
:func:`add_arguments` on its sub-parser and ``await serve(args)``, which returns the
exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from ._faults import Fault, parse_fault
from ._server import FakeAurousServer
from ._webhook_handlers import is_loopback

__all__ = ["EXIT_USAGE", "add_arguments", "build_parser", "main", "serve"]

#: The exit status of a user error (bad option values, a busy port).
EXIT_USAGE = 2
#: The SDK refuses plain http:// to a non-loopback host unless this is set to 1.
INSECURE_HTTP_ENV = "AUROUS_ALLOW_INSECURE_HTTP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake server's options to ``parser`` (this module's, or a sub-command's)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 for containers)")
    parser.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="API seconds per real second (60 = a minute per second)")
    parser.add_argument("--synthesis-seconds", type=float, default=45.0,
                        help="how long a synthesis takes, in API seconds (default 45)")
    parser.add_argument("--api-key", default=None, help="the default team's key (else minted)")
    parser.add_argument("--credits", type=float, default=1000.0,
                        help="the default team's credits (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="start with N ready characters and print their ids")
    parser.add_argument("--seed-file", default=None, metavar="PATH",
                        help="write the --seed ids to PATH, one per line, instead of stdout")
    parser.add_argument("--fault", action="append", default=[], metavar="ROUTE=KIND[:PROB]",
                        help="inject a fault, e.g. 'GET /v1/characters/{character_id}="
                             "json_503:0.1' (ROUTE * = every route; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m aurous_async.testing``."""
    parser = argparse.ArgumentParser(
        prog="python -m aurous_async.testing",
        description="Run the fake Aurous API server until interrupted. Its control API "
                    "is under /_fake/ (see aurous_async.testing._control).",
    )
    add_arguments(parser)
    return parser


class _UsageError(ValueError):
    """An option value that cannot work; reported as one line, exit status 2."""


@attrs.frozen
class _Options:
    host: str
    port: int
    time_scale: float
    synthesis_seconds: float
    api_key: str | None
    credits: float
    seed: int
    seed_file: Path | None
    faults: tuple[Fault, ...]


def _options(args: argparse.Namespace) -> _Options:
    # A parser built before an option existed leaves it out: it then takes its default.
    given = vars(args)
    time_scale = given.get("time_scale", 1.0)
    if not math.isfinite(time_scale) or time_scale <= 0:
        raise _UsageError("--time-scale must be a positive number")
    synthesis_seconds = given.get("synthesis_seconds", 45.0)
    if not math.isfinite(synthesis_seconds) or synthesis_seconds < 0:
        raise _UsageError("--synthesis-seconds must be a number >= 0")
    credits = given.get("credits", 1000.0)
    if not math.isfinite(credits):
        raise _UsageError("--credits must be a finite number")
    seed = given.get("seed", 0)
    if seed < 0:
        raise _UsageError("--seed must be >= 0")
    seed_file = given.get("seed_file")
    if seed_file is not None and seed == 0:
        raise _UsageError("--seed-file needs --seed N")
    faults = []
    for spec in given.get("fault") or ():
        try:
            faults.append(parse_fault(spec, FakeAurousServer.route_names))
        except ValueError as exc:
            raise _UsageError(f"--fault {spec!r}: {exc}") from None
    return _Options(host=given.get("host", "127.0.0.1"), port=given.get("port", 8080),
                    time_scale=time_scale, synthesis_seconds=synthesis_seconds,
                    api_key=given.get("api_key"), credits=credits, seed=seed,
                    seed_file=Path(seed_file) if seed_file is not None else None,
                    faults=tuple(faults))


async def serve(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the fake as ``args`` say until ``stop`` is set (or forever); return the exit
    status: 0, or :data:`EXIT_USAGE` after printing a one-line error to stderr."""
    try:
        options = _options(args)
    except _UsageError as exc:
        return _usage_error(str(exc))
    server = FakeAurousServer(
        host=options.host,
        port=options.port,
        time_scale=options.time_scale if options.time_scale != 1.0 else None,
        synthesis_seconds=options.synthesis_seconds,
        api_key=options.api_key,
        credits=options.credits,
    )
    server.faults.extend(options.faults)
    try:
        await server.start()
    except OSError as exc:
        return _usage_error(f"cannot listen on {options.host}:{options.port}: "
                            f"{exc.strerror or exc}")
    try:
        ids = [server.add_character(name=f"Seeded {i + 1}") for i in range(options.seed)]
        if options.seed_file is not None:
            try:
                options.seed_file.write_text("".join(f"{cid}\n" for cid in ids))
            except OSError as exc:
                return _usage_error(f"cannot write --seed-file {str(options.seed_file)!r}: "
                                    f"{exc.strerror or exc}")
        print(f"fake Aurous API on {server.base_url}", flush=True)
        print(f"AUROUS_BASE_URL={server.base_url}", flush=True)
        print(f"AUROUS_API_KEY={server.api_key}", flush=True)
        if options.seed_file is None:
            for cid in ids:
                print(cid, flush=True)
        _print_hints(server, options)
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()
    return 0


def _print_hints(server: FakeAurousServer, options: _Options) -> None:
    hints = [f"control API: {server.base_url}/_fake/ (loopback clients only)"]
    if options.time_scale != 1.0:
        hints.append(f"time runs x{options.time_scale:g}: give a client the same scale, e.g. "
                     f"aa.AurousSession(base_url={server.base_url!r}, "
                     f"api_key={server.api_key!r}, clock=aa.ScaledClock({options.time_scale!r}))")
    if not is_loopback(options.host):
        hints.append(f"the SDK refuses http:// to a host that is not loopback: set "
                     f"{INSECURE_HTTP_ENV}=1 in the client's environment, and use this "
                     f"machine's name or address in AUROUS_BASE_URL")
    for hint in hints:
        print(f"hint: {hint}", file=sys.stderr, flush=True)


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
