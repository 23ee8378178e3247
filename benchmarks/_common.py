"""Shared bits of the benchmarks: command line, machine facts, result printing, figures.

Every benchmark prints Markdown (prose stating the method, then a table) to stdout, and
appends its headline figures as JSON lines to the file named by ``--figures``, which
``run_all.py`` turns into the closing before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence


def machine_facts() -> str:
    """The machine, described generically: no host name, no path."""
    return (f"{os.cpu_count()} cores, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.machine()}")


def json_decoder() -> str:
    """Which JSON decoder the SDK uses for answers here (orjson with the speed extra)."""
    from aurous_async import _json

    if _json._fast is None:
        return "the standard library's json (orjson 3.9.15 or later not installed)"
    import orjson

    return f"orjson {orjson.__version__} (the `speed` extra) where it decodes as json.loads does"


def load_average() -> str:
    """The 1- and 5-minute load averages, for the results' header."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes, for a smoke test (figures are not comparable)")
    p.add_argument("--figures", help="append headline figures as JSON lines to this file")
    return p


def record(path: str | None, key: str, value: float) -> None:
    """Append one headline figure for run_all's closing table."""
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"key": key, "value": value}) + "\n")


def header(title: str) -> None:
    """Print a section heading."""
    print(f"\n## {title}\n", flush=True)


def prose(text: str) -> None:
    """Print a paragraph, its source line breaks and indents folded."""
    print(" ".join(text.split()) + "\n", flush=True)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def table(rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table; the first row is the header."""
    print(markdown_table(rows), flush=True)
