"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py

Each benchmark runs in its own process (so their memory figures do not mix), prints its
figures, ratios first, and the machine facts; this collects them in one file.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

from _common import machine_facts

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("bench_requests.py", []),
    ("bench_limiter.py", []),
    ("bench_fanout.py", []),
    ("bench_watchers.py", []),
    ("profile_requests.py", []),
]


def main() -> None:
    parts = [
        "# Benchmark results",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine_facts()}, by "
        "`python benchmarks/run_all.py`. Ratios first, absolute figures after.",
    ]
    for script, args in BENCHMARKS:
        print(f"running {script}…", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                                text=True, cwd=HERE, check=False)
        if result.returncode != 0:
            parts.append(f"\n## {script} failed\n\n```\n{result.stderr[-2000:]}\n```")
            continue
        parts.append(result.stdout.rstrip())
    text = "\n".join(parts) + "\n"
    (HERE / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
