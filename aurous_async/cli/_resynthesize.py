"""``aurous-async resynthesize``: paid calls, each one accounted for in a
:class:`ChargeLedger` whatever ends the run (a journaled batch: see ``_journaled``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable

from .. import AurousError, AurousSession, BatchProgress, BatchResult, CharacterStatus
from . import _journaled, _output
from ._charges import ChargeLedger
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    describe_error,
    exit_code,
    open_session,
)

# BatchProgress states that are not a character status.
_BATCH_STATES = frozenset({"dispatched", "done", "failed"})


def read_ids(args: argparse.Namespace) -> list[str]:
    """The ids from the command line, then those of ``--ids-file`` (one per line; blank
    lines and ``#`` comments skipped; ``-`` is stdin). Each id once: a repeat would be
    charged twice. None at all is allowed with ``--journal`` (the batch's own ids)."""
    ids = list(args.ids)
    if args.ids_file is not None:
        ids.extend(_ids_in(args.ids_file))
    if not ids and args.journal is None:
        raise UsageError("no character ids: give them as arguments or with --ids-file")
    seen: set[str] = set()
    for character_id in ids:
        if character_id in seen:
            raise UsageError(f"{character_id} is given twice (it would be charged twice)")
        seen.add(character_id)
    return ids


def _ids_in(path: str) -> Iterable[str]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ids-file {path}: {exc}") from None
    for line in text.splitlines():
        character_id = line.split("#", 1)[0].strip()
        if character_id:
            yield character_id


async def resynthesize(args: argparse.Namespace, ledger: ChargeLedger) -> int:
    """Run the command, recording every charge in ``ledger``; returns the exit code.

    With ``--journal`` it sets ``args.batch`` to the batch it runs (for the resume
    command), before anything is sent."""
    if args.journal is not None:
        args.batch = _journaled.batch_name(args)
    elif args.batch is not None:
        raise UsageError("--batch names a run recorded in a journal: give --journal PATH too")
    ids = read_ids(args)
    force_all = True if args.force_all else None
    if args.journal is not None:
        return await _journaled_run(args, ids, force_all, ledger)
    ledger.expect(ids)
    # Saving means following the character to `reviewing`: --auto-save implies --watch.
    watch = args.watch or args.auto_save
    async with open_session(args) as s:
        if not watch:
            return await _one_by_one(s, args, ids, force_all, ledger)
        if len(ids) == 1:
            return await _follow_one(s, args, ids[0], force_all, ledger)
        return await _fan_out(s, args, ids, force_all, ledger)


async def _one_by_one(s: AurousSession, args: argparse.Namespace, ids: list[str],
                      force_all: bool | None, ledger: ChargeLedger) -> int:
    """Send each in turn and print its answer as it comes; the first error ends the run
    (the ids after it are not sent)."""
    for character_id in ids:
        ledger.sending(character_id)
        try:
            character = await s.characters.resynthesize(character_id, force_all=force_all)
        except (ValueError, TypeError):
            ledger.unsent(character_id)  # an argument check: nothing went out
            raise
        except AurousError as exc:
            ledger.failed(character_id, exc)
            raise
        ledger.seen(character_id, character.status)
        if args.json:
            _output.print_json(_output.to_json(character))
        else:
            _output.print_characters([character])
    return EXIT_OK


async def _follow_one(s: AurousSession, args: argparse.Namespace, character_id: str,
                      force_all: bool | None, ledger: ChargeLedger) -> int:
    updates = s.characters.resynthesize_and_watch(
        character_id, force_all=force_all, auto_save=args.auto_save, timeout=args.timeout
    )
    ledger.sending(character_id)
    last: CharacterStatus | None = None
    try:
        # The first update is the answer to the POST: from then on it is charged.
        async for update in updates:
            last = update.status
            ledger.seen(character_id, update.status)
            if args.json:
                _output.print_json(_output.to_json(update))
            else:
                _output.print_update(update)
    except AurousError as exc:
        ledger.failed(character_id, exc)
        raise
    return EXIT_FAILED if last == CharacterStatus.FAILED else EXIT_OK


def _progress(ledger: ChargeLedger) -> Callable[[BatchProgress], None]:
    """A fan-out's progress callback that records what it says in ``ledger``."""

    def progress(p: BatchProgress) -> None:
        if p.character_id is None or p.state is None:
            return
        if p.state == "dispatched":
            ledger.sending(p.character_id)
        elif p.state not in _BATCH_STATES:
            ledger.seen(p.character_id, p.state)

    return progress


async def _fan_out(s: AurousSession, args: argparse.Namespace, ids: list[str],
                   force_all: bool | None, ledger: ChargeLedger) -> int:
    return await _show_results(args, ledger, s.characters.resynthesize_many(
        ids, force_all=force_all, auto_save=args.auto_save, timeout=args.timeout,
        progress=_progress(ledger),
    ))


async def _journaled_run(args: argparse.Namespace, ids: list[str], force_all: bool | None,
                         ledger: ChargeLedger) -> int:
    """The batch through ``resynthesize_many(journal=...)``, which always watches: the
    journal implies ``--watch`` (the fan-out path), whatever the number of ids."""
    async with open_session(args) as s, _journaled.open_journal(args) as journal:
        if not ids:
            ids = await _journaled.journal_ids(journal, args)
        ledger.expect(ids)
        results = _journaled.results(s, journal, args, ids, ledger, _progress(ledger),
                                     force_all=force_all, auto_save=args.auto_save,
                                     timeout=args.timeout)
        # Closed here, whatever stops the printing: the batch's lease is released now,
        # not whenever the event loop finalizes the generator.
        async with contextlib.aclosing(results):
            return await _show_results(args, ledger, results)


async def _show_results(args: argparse.Namespace, ledger: ChargeLedger,
                        results: AsyncIterator[BatchResult]) -> int:
    """Record and print each result; the exit code of the worst."""
    worst = EXIT_OK
    async for result in results:
        _record(ledger, result)
        _print_result(args, result)
        if result.error is not None:
            worst = max(worst, exit_code(result.error))
    return worst


def _record(ledger: ChargeLedger, result: BatchResult) -> None:
    if result.from_journal:
        # Finished by an earlier run of the batch: no request now, no charge now.
        status = result.character.status if result.character is not None else None
        ledger.finished_before(result.character_id, status)
        return
    if result.character is not None:
        # Only an answered POST gives a batch result its character.
        ledger.seen(result.character_id, result.character.status)
    if result.error is not None:
        ledger.failed(result.character_id, result.error)


def _print_result(args: argparse.Namespace, result: BatchResult) -> None:
    if args.json:
        _output.print_json({
            "character_id": result.character_id,
            "ok": result.ok,
            "character": _output.to_json(result.character) if result.character else None,
            "error": describe_error(result.error) if result.error else None,
            "from_journal": result.from_journal,
        })
        return
    origin = "  (from the journal)" if result.from_journal else ""
    if result.error is None:
        status = result.character.status.value if result.character else "?"
        print(f"{result.character_id}  {status}{origin}", flush=True)
    else:
        print(f"{result.character_id}  error: {describe_error(result.error)}{origin}",
              flush=True)
