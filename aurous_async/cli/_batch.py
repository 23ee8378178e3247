"""``aurous-async batch show PATH``: what a journal knows about a batch, read without
its lease (safe while a runner works on it) and without any API call.

Plain output: one line of counts per state, then one row per id in the order added
(id, state, status, charged, then the error last since it holds spaces); a table on a
terminal. ``--json``: one object per id, then one summary object
``{"batch", "journal", "total", "counts"}``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from .. import SQLiteJournal
from .._journal import JournalRecord, JournalState
from . import _output
from ._common import EXIT_OK, UsageError

try:  # the `cli` extra
    from rich.table import Table
except ImportError:  # pragma: no cover - exercised only without the extra
    Table = None  # type: ignore[assignment,misc]

_STATE_WIDTH = max(len(state.value) for state in JournalState)
_STATUS_WIDTH = len("synthesizing")
_CHARGED_WIDTH = len("maybe")


async def show(args: argparse.Namespace) -> int:
    """Print the batch ``args.batch`` of the journal ``args.path`` (the only batch there
    when not given)."""
    async with SQLiteJournal(args.path) as journal:
        name = args.batch if args.batch is not None else await _only_batch(journal, args)
        records = await journal.read_batch(name)
        if not records:
            names = await journal.batches()
            raise UsageError(f"no batch {name!r} in {args.path} (its batches: "
                             f"{', '.join(names) or 'none'})")
    counts = Counter(record.state for record in records)
    if args.json:
        for record in records:
            _output.print_json(_record_json(record))
        _output.print_json({"batch": name, "journal": args.path, "total": len(records),
                            "counts": {state.value: counts[state] for state in JournalState}})
        return EXIT_OK
    print(f"batch {name} in {args.path}: {len(records)} ids: "
          + ", ".join(f"{state.value} {counts[state]}" for state in JournalState))
    _print_records(records)
    return EXIT_OK


async def _only_batch(journal: SQLiteJournal, args: argparse.Namespace) -> str:
    names = await journal.batches()
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError(f"{args.path} holds no batch yet")
    for name in names:  # for the user to pick from (or a script to loop over)
        if args.json:
            _output.print_json({"batch": name})
        else:
            print(name)
    raise UsageError(f"{args.path} holds {len(names)} batches: pick one with --batch NAME")


def charged(record: JournalRecord) -> str:
    """Whether the id was charged: ``yes`` (a POST of it was answered 2xx), ``no``
    (none was, or the last answer was final), or ``maybe``: a POST went out without a
    2xx seen — resuming sends it again under the recorded Idempotency-Key, so it is
    charged once at most."""
    if record.charged or record.state in (JournalState.SENT, JournalState.DONE):
        return "yes"
    if record.state is JournalState.FAILED:
        return "no"
    if record.state is JournalState.SENDING or record.idempotency_key is not None:
        return "maybe"
    return "no"


def _error(record: JournalRecord) -> str:
    if record.error_class is None:
        return ""
    detail = record.error_message or record.error_code
    return f"{record.error_class}: {detail}" if detail else record.error_class


def _record_json(record: JournalRecord) -> dict[str, Any]:
    """One record for scripts. Never the character JSON: its ref URLs are signed."""
    return {
        "character_id": record.character_id,
        "state": record.state.value,
        "status": record.status,
        "charged": charged(record),
        "error_class": record.error_class,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "idempotency_key": record.idempotency_key,
        "request_id": record.request_id,
        "sent_at": _time(record.sent_at),
        "updated_at": _time(record.updated_at),
    }


def _time(unix: float | None) -> str | None:
    if unix is None:
        return None
    return _output.iso(datetime.fromtimestamp(unix, tz=timezone.utc).replace(microsecond=0))


def _print_records(records: list[JournalRecord]) -> None:
    out = _output.console()
    if out is None or Table is None:
        for record in records:
            line = (f"{record.character_id}  {record.state.value:<{_STATE_WIDTH}}  "
                    f"{record.status or '-':<{_STATUS_WIDTH}}  "
                    f"{charged(record):<{_CHARGED_WIDTH}}  {_error(record)}")
            print(line.rstrip())
        sys.stdout.flush()
        return
    table = Table("state", "status", "charged", "error")
    table.add_column("id", no_wrap=True)  # ids are for copying: never wrap them
    table.columns.insert(0, table.columns.pop())
    for record in records:
        status = record.status or "-"
        table.add_row(record.character_id, record.state.value,
                      f"[{_output.style(status)}]{status}[/]", charged(record), _error(record))
    out.print(table)
