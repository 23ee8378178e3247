"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # full run, ~15 min on 2 cores
    python benchmarks/run_all.py --quick    # everything small, ~2 min, printed only

Each benchmark runs in its own process (so their memory figures do not mix), prints
Markdown (the method in prose, then a table) and appends its headline figures to a
shared file; this collects the Markdown in one file, ends it with the issue-15 targets
(before and now), and keeps the machine's absolute paths out of it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import load_average, machine_facts, markdown_table

import aurous_async

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_requests.py", "bench_instructions.py", "bench_limiter.py",
              "bench_fanout.py", "bench_watchers.py", "bench_durable.py",
              "bench_webhooks.py"]
TIMEOUT = {False: 900, True: 300}  # seconds per benchmark, full and quick

# Issue 15's targets: figure key, what it is, the figure when the issue was filed, the
# goal, the test of the goal, and how to print the figure.
Target = tuple[str, str, str, str, Callable[[float], bool], str]
TARGETS: list[Target] = [
    ("instructions_ratio_sdk", "default config: instructions per request ÷ raw aiohttp",
     "1.70", "≤ 1.20", lambda v: v <= 1.20, "{:.2f}"),
    ("bound_best_ratio_sdk", "default config: best-round req/s ÷ raw aiohttp (client-bound, "
     "concurrency 50)", "0.64", "≥ 0.85", lambda v: v >= 0.85, "{:.2f}"),
    ("instructions_ratio_sdk_nolimits", "`rate_limits=None`: instructions per request ÷ raw "
     "aiohttp", "1.45", "≤ 1.15", lambda v: v <= 1.15, "{:.2f}"),
    ("fanout_1000_makespan_ratio", "fan-out of 1,000: makespan ÷ bound", "1.001", "≤ 1.01",
     lambda v: v <= 1.01, "{:.3f}"),
    ("fanout_1000_gets_per_character", "fan-out of 1,000: GETs per character", "1.48",
     "≤ 1.5", lambda v: v <= 1.5, "{:.2f}"),
    ("fanout_1000_429s", "fan-out of 1,000: 429s", "0", "0", lambda v: v == 0, "{:.0f}"),
    ("fanout_5000_makespan_ratio", "fan-out of 5,000: makespan ÷ bound", "—", "≤ 1.01",
     lambda v: v <= 1.01, "{:.3f}"),
    ("fanout_5000_gets_per_character", "fan-out of 5,000: GETs per character", "—", "≤ 1.5",
     lambda v: v <= 1.5, "{:.2f}"),
    ("fanout_5000_429s", "fan-out of 5,000: 429s", "—", "0", lambda v: v == 0, "{:.0f}"),
    ("watcher_10000_bytes_rss", "10,000 idle watchers: bytes per watcher (RSS)", "3,416",
     "≤ 3,500", lambda v: v <= 3500, "{:,.0f}"),
    ("watcher_10000_bytes_traced", "10,000 idle watchers: bytes per watcher (tracemalloc)",
     "—", "≤ 3,500", lambda v: v <= 3500, "{:,.0f}"),
]


def scrub(text: str) -> str:
    """The text without this machine's absolute paths (tracebacks, tool output)."""
    # A path into a package keeps its package-relative part: .../aurous_async/x.py.
    text = re.sub(r"(?:/[^\s/\"'`:]+)+/((?:aurous_async|benchmarks|site-packages)/)", r"\1",
                  text)
    for prefix, name in ((str(HERE.parent), "."), (sys.prefix, "<python>"),
                         (str(Path.home()), "~"), (tempfile.gettempdir(), "<tmp>")):
        text = text.replace(prefix, name)
    # Anything else under a machine directory (an API path like /v1/... stays).
    return re.sub(r"(?<![\w.<>~])/(?:root|home|tmp|usr|opt|work|var|srv|mnt|etc|proc)"
                  r"(?:/[^\s/\"'`:]+)+", "<path>", text)


def code_measured() -> str:
    """Which aurous_async was measured: its version, and its commit when it is a checkout."""
    package = Path(aurous_async.__file__).parent
    version = f"aurous-async {aurous_async.__version__}"

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                                text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return version
    dirty = git("status", "--porcelain", "--", ".")
    return f"{version} at commit {commit}" + (" with uncommitted changes" if dirty else "")


def run(script: str, quick: bool, figures: str) -> str:
    """One benchmark's Markdown, or a section saying how it failed."""
    args = [sys.executable, str(HERE / script), "--figures", figures, *(["--quick"] * quick)]
    try:
        result = subprocess.run(args, capture_output=True, text=True, cwd=HERE, check=False,
                                timeout=TIMEOUT[quick])
    except subprocess.TimeoutExpired:
        return f"\n## {script} did not finish within {TIMEOUT[quick]} s\n"
    if result.returncode != 0:
        return f"\n## {script} failed\n\n```\n{result.stderr[-3000:]}\n```\n"
    return result.stdout.rstrip() + "\n"


def targets(figures: dict[str, float]) -> str:
    """The closing table: each issue-15 target before, now, and whether it is met."""
    rows = [("target", "when issue 15 was filed", "this run", "goal", "met")]
    for key, label, before, goal, met, fmt in TARGETS:
        if key in figures:
            value = figures[key]
            rows.append((label, before, fmt.format(value), goal, "yes" if met(value) else "no"))
    if len(rows) == 1:
        return "No target figures: a quick run uses other sizes, or the benchmarks failed.\n"
    return markdown_table(rows)


def main() -> None:
    """Run every benchmark and write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, ~2 min, not written")
    p.add_argument("--output", help="where to write (default: RESULTS.md, or nowhere if "
                                    "--quick)")
    args = p.parse_args()
    started, load_before = time.perf_counter(), load_average()
    parts: list[str] = []
    timings: list[str] = []
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as figures_file:
        for script in BENCHMARKS:
            print(f"running {script}…", file=sys.stderr, flush=True)
            began = time.perf_counter()
            parts.append(run(script, args.quick, figures_file.name))
            timings.append(f"{script} {(time.perf_counter() - began) / 60:.1f}")
        figures = {f["key"]: f["value"] for f in map(json.loads, figures_file)}
    minutes = (time.perf_counter() - started) / 60
    head = [
        "# Benchmark results" + (" (quick run: small sizes, not comparable)" if args.quick
                                 else ""),
        "",
        f"Measured {datetime.date.today().isoformat()} by `python benchmarks/run_all.py"
        f"{' --quick' if args.quick else ''}` in {minutes:.0f} min, {code_measured()}, on "
        f"{machine_facts()}. The machine was shared: load "
        f"average {load_before} at the start, {load_average()} at the end; the "
        "instruction counts are immune to that, the timings are not (hence interleaved "
        "rounds, medians and best rounds).",
    ]
    closing = ["## Issue 15 targets", "",
               "Each target of issue 15: its figure when the issue was filed (before any "
               "of its work), and in this run.", "", targets(figures),
               f"Minutes per benchmark: {', '.join(timings)}."]
    text = scrub("\n".join(head) + "\n" + "\n".join(parts) + "\n" + "\n".join(closing))
    output = args.output or (None if args.quick else str(HERE / "RESULTS.md"))
    if output:
        Path(output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
