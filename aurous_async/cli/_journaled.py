"""``aurous-async resynthesize --journal PATH``: a batch recorded in a SQLite journal, so
that running the command again resumes it and charges no character twice.

The batch is named by ``--batch`` (default: the stem of ``--ids-file``). Without ids the
command resumes every id of the batch. A lease held by another runner is waited out
when that runner died (it stopped renewing); a live one is reported and the command ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from .. import AurousSession, BatchInUseError, BatchProgress, BatchResult, SQLiteJournal
from .._journal import JournalRecord, JournalState, check_batch_name
from ._charges import ChargeLedger
from ._common import UsageError

#: Seconds added to a lease's remaining life before trying again: its holder's clock and
#: ours may differ a little (a journal file on a shared disk).
LEASE_MARGIN = 1.0


def batch_name(args: argparse.Namespace) -> str:
    """The batch of a journaled run: ``--batch``, else the stem of ``--ids-file``."""
    if args.batch is not None:
        name, origin = args.batch, "--batch"
    elif args.ids_file is not None and args.ids_file != "-":
        name = Path(args.ids_file).stem
        origin = f"the batch name (the stem of --ids-file {args.ids_file})"
    else:
        raise UsageError("--journal needs --batch NAME when the ids do not come from a file "
                         "(--ids-file FILE names the batch after the file)")
    try:
        return check_batch_name(name)
    except ValueError:
        raise UsageError(f"{origin} {name!r} is not a batch name: 1-200 printable ASCII "
                         "characters without spaces; pass --batch NAME") from None


def resume_command(args: argparse.Namespace) -> str:
    """The shell command that resumes this run: the batch's own ids from the journal,
    with the options that shape the run. An ``--api-key`` is never printed: a comment
    says to add it."""
    argv = ["aurous-async", "resynthesize", "--journal", args.journal, "--batch", args.batch]
    if args.force_all:
        argv.append("--force-all")
    if args.auto_save:
        argv.append("--auto-save")
    if args.timeout is not None:
        argv += ["--timeout", format(args.timeout, "g")]
    if args.base_url is not None:
        argv += ["--base-url", args.base_url]
    if args.json:
        argv.append("--json")
    if args.verbose:
        argv.append("-v")
    command = shlex.join(argv)
    if args.api_key is not None:
        command += "  # and your --api-key (not printed)"
    return command


def open_journal(args: argparse.Namespace) -> SQLiteJournal:
    """The journal of ``--journal``, on the command's clock (its leases too)."""
    return SQLiteJournal(args.journal, clock=args.clock)


async def journal_ids(journal: SQLiteJournal, args: argparse.Namespace) -> list[str]:
    """Every id of the batch, in the order added: what a run without ids resumes."""
    records = await _records(journal, args)
    if not records:
        raise UsageError(f"no batch {args.batch!r} in {args.journal}: give the ids "
                         "(as arguments or with --ids-file) to start it")
    return [record.character_id for record in records]


async def results(s: AurousSession, journal: SQLiteJournal, args: argparse.Namespace,
                  ids: list[str], ledger: ChargeLedger,
                  progress: Callable[[BatchProgress], None],
                  **options: Any) -> AsyncGenerator[BatchResult, None]:
    """The results of the batch as ``resynthesize_many`` yields them, after waiting out
    a lease left by a runner that died.

    Before each try the ledger learns which ids an earlier run charged (journal state
    ``sent``): this run only follows those, and must not count them as its charges.
    """
    wait = _LeaseWait(args.batch)
    while True:
        await _note_earlier_charges(journal, args, ids, ledger)
        run = s.characters.resynthesize_many(ids, journal=journal, batch=args.batch,
                                             progress=progress, **options)
        async with run:
            try:
                first = await anext(run)
            except BatchInUseError as exc:
                await journal.clock.sleep(wait.next(exc))
                continue
            yield first
            async for result in run:
                yield result
            return


async def _note_earlier_charges(journal: SQLiteJournal, args: argparse.Namespace,
                                ids: list[str], ledger: ChargeLedger) -> None:
    wanted = set(ids)
    for record in await _records(journal, args):
        if record.state is JournalState.SENT and record.character_id in wanted:
            ledger.charged_before(record.character_id)


async def _records(journal: SQLiteJournal, args: argparse.Namespace) -> list[JournalRecord]:
    """The batch's records, none while the journal file does not exist yet (reading
    would fail on it, and a first run makes it)."""
    if not await asyncio.to_thread(os.path.exists, args.journal):
        return []
    return await journal.read_batch(args.batch)


class _LeaseWait:
    """How long to wait for another runner's lease: until it lapses (a runner that died
    stops renewing it), then again while the budget — twice the first lease's remaining
    life — lasts. A lease still held after that is renewed by a live runner."""

    def __init__(self, batch: str) -> None:
        self._batch = batch
        self._budget: float | None = None
        self._waited = 0.0

    def next(self, busy: BatchInUseError) -> float:
        """The seconds to sleep before trying again; ``UsageError`` once the budget is
        spent. The first call says on stderr that the command waits, and how long."""
        if self._budget is None:
            self._budget = 2 * busy.expires_in
            print(f"batch {self._batch!r} is held by another runner: waiting "
                  f"{busy.expires_in + LEASE_MARGIN:.0f}s for its lease to lapse (a runner "
                  f"that died stops renewing it), {self._budget:.0f}s at most",
                  file=sys.stderr, flush=True)
        elif self._waited >= self._budget:
            raise UsageError(
                f"batch {self._batch!r} is still held after {self._waited:.0f}s: another "
                "runner is working on it (it keeps renewing its lease). Let it finish, or "
                "stop it, then run this command again")
        seconds = min(busy.expires_in + LEASE_MARGIN,
                      max(self._budget - self._waited, LEASE_MARGIN))
        self._waited += seconds
        return seconds
