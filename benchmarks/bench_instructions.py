"""Instructions per request under valgrind's cachegrind: the SDK ÷ raw aiohttp, a figure
the load of a shared machine cannot move.

    python benchmarks/bench_instructions.py [--quick] [--clients sdk,nolimits,decode,new]

Each client of _clients.py runs alone in a process under cachegrind (the replay server
runs in another process, not under valgrind), once for N and once for 4N requests at
concurrency 50; the difference of the two instruction counts over 3N is the cost of one
request, with interpreter start-up, imports and warm-up cancelled out. Installs valgrind
from Debian packages when it is missing and we are root with apt-get; otherwise skips.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _clients import RAW, RAW_DECODE, SDK, SDK_NO_LIMITS, unavailable
from _common import header, json_decoder, parser, prose, record, table
from _servers import DISTINCT, HERE, ServerProcess

CONCURRENCY = 50
#: The default SDK, and raw aiohttp, against ``replay --distinct``, fetching as many ids
#: as it has answers: nothing an answer holds (its URL, times, attributes) was seen in
#: the last 5,000.
SDK_NEW, RAW_NEW = "sdk, every answer new", "raw aiohttp, every answer new"
NEW = {SDK_NEW: SDK, RAW_NEW: RAW}
#: Short names for --clients (the clients' own names hold commas).
SHORT = {"sdk": SDK, "nolimits": SDK_NO_LIMITS, "raw": RAW, "decode": RAW_DECODE,
         "new": SDK_NEW}


def ensure_valgrind() -> tuple[str | None, str]:
    """The valgrind executable (installing it if we may), or None and why not."""
    found = shutil.which("valgrind")
    if found:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "valgrind is not installed, and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "install", "-y", "-qq", "valgrind"],
                 ["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "valgrind"]):
        # Install straight away; only if that fails, refresh the package lists and retry.
        subprocess.run(step, env=env, capture_output=True, check=False)
        found = shutil.which("valgrind")
        if found:
            print(f"(installed valgrind with {' '.join(step[:2])})", file=sys.stderr)
            return found, ""
    return None, "`apt-get install valgrind` failed"


def instructions(valgrind: str, info: dict[str, Any], client: str, requests: int) -> int:
    """Instructions the client process executed, start to exit, for ``requests``."""
    distinct = ["--distinct", str(DISTINCT)] if client in NEW else []
    command = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--branch-sim=no",
               "--cachegrind-out-file=/dev/null", sys.executable, str(HERE / "_clients.py"),
               NEW.get(client, client), info["url"], info["key"],
               info["ids"][0], "--requests", str(requests), "--concurrency",
               str(CONCURRENCY), *distinct]
    # A fixed hash seed: set and dict layouts, and so the instruction count, repeat exactly.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or found is None:
        tail = "\n".join(line for line in result.stderr.splitlines()[-15:]
                         if not line.startswith("=="))
        raise RuntimeError(f"{client} under cachegrind failed:\n{tail}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    """Count every client's instructions per request and print the table."""
    p = parser(__doc__)
    p.add_argument("--clients", help="only these, each once, comma-separated, of "
                   f"{', '.join(SHORT)} (raw aiohttp, the reference, is always counted); "
                   "default: all, with raw aiohttp and sdk twice")
    args = p.parse_args()
    n = 100 if args.quick else 1000
    header("Instructions per request (cachegrind): SDK ÷ raw aiohttp, client-bound")
    valgrind, why = ensure_valgrind()
    if valgrind is None:
        prose(f"Skipped: {why}. Install valgrind (`apt-get install valgrind`) to get "
              "this table.")
        return
    clients = [RAW, RAW_DECODE, SDK_NO_LIMITS, SDK, RAW_NEW, SDK_NEW]
    if args.clients:
        wanted = {RAW, *(SHORT[name.strip()] for name in args.clients.split(","))}
        if SDK_NEW in wanted:
            wanted.add(RAW_NEW)  # its reference
        clients = [c for c in clients if c in wanted]
    skipped = {c: reason for c in clients if (reason := unavailable(NEW.get(c, c)))}
    clients = [c for c in clients if c not in skipped]
    # Raw aiohttp and the default SDK run twice (interleaved with the rest), so the table
    # shows how well a count repeats.
    order = [RAW, SDK] if args.quick else [*clients, RAW, SDK] if not args.clients \
        else clients
    per_request: dict[str, list[float]] = {}
    started = time.perf_counter()
    # The two runs of a client go side by side, one per core: counts do not depend on
    # timing, and it halves the wait.
    with ServerProcess("replay") as server, ServerProcess("replay", "--distinct") as varied, \
            ThreadPoolExecutor(2) as pool:
        for client in order:
            info = varied.info if client in NEW else server.info
            small, large = pool.map(lambda count, c=client, i=info: instructions(
                valgrind, i, c, count), (n, 4 * n))
            per_request.setdefault(client, []).append((large - small) / (3 * n))
    minutes = (time.perf_counter() - started) / 60
    prose(f"""Each client runs alone in a process under `valgrind --tool=cachegrind
        --cache-sim=no` with `PYTHONHASHSEED=0`, against the replay server of the
        client-bound table (in its own process, not under valgrind), at concurrency
        {CONCURRENCY}: once for {n:,} requests and once for {4 * n:,}, after the same
        warm-up. Instructions per request = (count at {4 * n:,} − count at {n:,}) ÷
        {3 * n:,}, so interpreter start-up, imports and warm-up cancel out. Counts do
        not depend on the machine's load; where a client ran twice both figures are
        shown. "sdk" is the default configuration as in the table above (rate limiter
        on, a bucket that never runs dry). The rows "every answer new" are the same
        clients against a replay server cycling through {DISTINCT:,} variants of that
        answer (other timestamps, another `gender`, other signed ref URLs), fetching
        {DISTINCT:,} ids in turn: nothing parsed for one answer (its URL, by the SDK and
        by yarl's own cache; its times, attributes and refs, by the SDK) helps the
        next, as when every call reads a
        different character; their ratio is to raw aiohttp doing the same. The other
        rows repeat one answer, as polling one character does. httpx is left out: at an order of magnitude
        more per request than the SDK (table above) it would take most of the run's time.
        The SDK decoded answers with {json_decoder()}; raw aiohttp's `response.json()`
        uses the standard library's. ({minutes:.1f} min.)""")
    for name, reason in skipped.items():
        prose(f"Not measured: **{name}**: {reason}.")
    raw = statistics.fmean(per_request[RAW])
    rows = [("client", "instructions per request (k)", "÷ raw aiohttp (its mean)")]
    for client in [c for c in clients if c in per_request]:
        counts = per_request[client]
        # Each to raw aiohttp fetching the same kind of answers.
        reference = statistics.fmean(per_request[RAW_NEW if client in NEW else RAW])
        rows.append((client, " / ".join(f"{c / 1000:.0f}" for c in counts),
                     " / ".join(f"{c / reference:.2f}" for c in counts)))
    table(rows)
    if SDK in per_request:
        record(args.figures, "instructions_ratio_sdk",
               statistics.fmean(per_request[SDK]) / raw)
    if SDK_NO_LIMITS in per_request:
        record(args.figures, "instructions_ratio_sdk_nolimits",
               statistics.fmean(per_request[SDK_NO_LIMITS]) / raw)
    if SDK_NEW in per_request and RAW_NEW in per_request:
        record(args.figures, "instructions_ratio_sdk_every_answer_new",
               statistics.fmean(per_request[SDK_NEW]) / statistics.fmean(per_request[RAW_NEW]))
    record(args.figures, "instructions_raw_k", raw / 1000)


if __name__ == "__main__":
    main()
