"""Printing for the CLI: JSON for scripts, rich tables for people (plain text without
the ``cli`` extra)."""

from __future__ import annotations

import json
import sys
from typing import Any

from .._convert import converter
from .._models import Character, DeletedCharacter, StatusUpdate

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


def to_json(value: Character | DeletedCharacter | StatusUpdate) -> Any:
    data = converter.unstructure(value)
    if isinstance(value, StatusUpdate):
        data["character"] = to_json(value.character)
    return data


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def style(status: str) -> str:
    return _STATUS_STYLE.get(status, "magenta")


def console() -> Any:
    if Console is None:
        return None
    return Console(highlight=False)


def print_characters(characters: list[Character]) -> None:
    out = console()
    if out is None or Table is None:
        for c in characters:
            print(f"{c.id}  {c.status.value:<12}  {c.name}")
        return
    table = Table("status", "name", "refs", "updated")
    table.add_column("id", no_wrap=True)  # ids are for copying: never wrap them
    table.columns.insert(0, table.columns.pop())
    for c in characters:
        table.add_row(c.id, f"[{style(c.status.value)}]{c.status.value}[/]", c.name,
                      ", ".join(r.pose.value for r in c.refs),
                      c.updated_at.isoformat() if c.updated_at else "")
    out.print(table)


def print_update(update: StatusUpdate) -> None:
    previous = update.previous_status.value if update.previous_status else "—"
    line = (f"{update.character.id}  {previous} -> {update.status.value}"
            f"  (polls {update.polls}, {update.elapsed:.1f}s)")
    out = console()
    if out is None:
        print(line, flush=True)
    else:
        out.print(line.replace(update.status.value,
                               f"[{style(update.status.value)}]{update.status.value}[/]", 1))
