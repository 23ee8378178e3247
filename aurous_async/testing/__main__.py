"""``python -m aurous_async.testing``: run the fake Aurous server standalone."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._server import FakeAurousServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aurous_async.testing",
        description="Run the fake Aurous API server on loopback until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="API seconds per real second (60 = a minute per second)")
    parser.add_argument("--synthesis-seconds", type=float, default=45.0,
                        help="how long a synthesis takes, in API seconds")
    parser.add_argument("--api-key", default=None, help="the default team's key (else minted)")
    parser.add_argument("--credits", type=float, default=1000.0, help="the default team's credits")
    return parser


async def serve(args: argparse.Namespace) -> None:
    if args.time_scale <= 0:
        raise SystemExit("--time-scale must be positive")
    server = FakeAurousServer(
        host=args.host,
        port=args.port,
        time_scale=args.time_scale if args.time_scale != 1.0 else None,
        synthesis_seconds=args.synthesis_seconds,
        api_key=args.api_key,
        credits=args.credits,
    )
    async with server:
        print(f"fake Aurous API on {server.base_url}", flush=True)
        print(f"AUROUS_BASE_URL={server.base_url}", flush=True)
        print(f"AUROUS_API_KEY={server.api_key}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
