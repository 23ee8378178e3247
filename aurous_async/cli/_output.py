"""Printing for the CLI: one JSON object per line for scripts; for people, rich tables
on a terminal (with the ``cli`` extra) and plain, untruncated columns everywhere else.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import attrs

from .. import Character, DeletedCharacter, StatusUpdate

try:  # the `cli` extra
    from rich.console import Console
    from rich.table import Table
except ImportError:  # pragma: no cover - exercised only without the extra
    Console = None  # type: ignore[assignment,misc]
    Table = None  # type: ignore[assignment,misc]

_STATUS_STYLE = {
    "synthesizing": "yellow",
    "reviewing": "cyan",
    "ready": "green",
    "failed": "red",
    "deleted": "dim",
    "queued": "dim",
    "dispatched": "blue",
    "done": "green",
}

# Plain columns have fixed widths, so rows print as they arrive (`list | head` works at
# once) and still line up: the longest status, an ISO timestamp, the four poses a
# synthesis makes. A longer value widens its own row only; nothing is cut.
_STATUS_WIDTH = len("synthesizing")
_UPDATED_WIDTH = len("2025-01-01T00:00:00Z")
_REFS_WIDTH = len("portrait,front,side,back")


def to_json(value: Character | DeletedCharacter | StatusUpdate) -> dict[str, Any]:
    """``value`` as the API's JSON: field names as the API spells them, times as ISO 8601
    in UTC with ``Z`` (a status update nests its character; the enums are ``str``s)."""
    return attrs.asdict(value, value_serializer=_json_value)


def _json_value(instance: object, field: object, value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def iso(moment: datetime) -> str:
    """``moment`` as the API writes times: ``2025-01-01T00:00:00Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def print_json(value: Any) -> None:
    """One JSON object on one line of stdout, flushed for whoever reads the pipe."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def style(status: str) -> str:
    """The rich style a status is shown in."""
    return _STATUS_STYLE.get(status, "magenta")


def console() -> Any:
    """A rich console when stdout is a terminal and rich is installed, else ``None``:
    rich wraps and truncates to a width, which a pipe must never get."""
    if Console is None or not sys.stdout.isatty():
        return None
    return Console(highlight=False)


def print_characters(characters: list[Character]) -> None:
    """Characters as a table on a terminal, as plain rows elsewhere."""
    out = console()
    if out is None or Table is None:
        for character in characters:
            print_row(character)
        sys.stdout.flush()
        return
    table = Table("status", "name", "refs", "updated")
    table.add_column("id", no_wrap=True)  # ids are for copying: never wrap them
    table.columns.insert(0, table.columns.pop())
    for c in characters:
        table.add_row(c.id, f"[{style(c.status.value)}]{c.status.value}[/]", c.name,
                      ", ".join(r.pose.value for r in c.refs),
                      c.updated_at.isoformat() if c.updated_at else "")
    out.print(table)


def print_row(c: Character) -> None:
    """One character on one plain line: id, status, updated, refs, then the name last,
    since it is the only column that may hold spaces (``awk '{print $1}'`` is the id).
    Not flushed: a long listing goes out in whole buffers."""
    updated = iso(c.updated_at) if c.updated_at else "-"
    refs = ",".join(r.pose.value for r in c.refs) or "-"
    line = (f"{c.id}  {c.status.value:<{_STATUS_WIDTH}}  {updated:<{_UPDATED_WIDTH}}  "
            f"{refs:<{_REFS_WIDTH}}  {c.name}")
    print(line.rstrip())


def print_update(update: StatusUpdate) -> None:
    """One status change on one line."""
    previous = update.previous_status.value if update.previous_status else "-"
    line = (f"{update.character.id}  {previous} -> {update.status.value}"
            f"  (polls {update.polls}, {update.elapsed:.1f}s)")
    out = console()
    if out is None:
        print(line, flush=True)
    else:
        out.print(line.replace(update.status.value,
                               f"[{style(update.status.value)}]{update.status.value}[/]", 1))
