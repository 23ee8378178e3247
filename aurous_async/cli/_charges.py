"""What a ``resynthesize`` run did to the bill, character by character.

The command records what it observes through the public API (a POST sent, its answer,
each status seen); whatever ends the run (success, an error, a timeout, Ctrl-C), the
summary says which characters were charged, which were never sent, which may have been
charged without an answer, and which are left unsaved. A run of a journaled batch also
tells apart what earlier runs of the batch did: ids they charged (this run only follows
them) and ids they finished (read from the journal, nothing sent).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import TextIO

import attrs

from .. import AurousError, CharacterStatus


class _Fate(enum.Enum):
    NOT_SENT = "not sent"
    SENDING = "sending"  # the POST may be out: an answer will say whether it charged
    CHARGED = "charged"
    NOT_CHARGED = "not charged"
    MAYBE_CHARGED = "maybe charged"
    CHARGED_EARLIER = "charged earlier"  # by an earlier run of the batch: followed now
    FROM_JOURNAL = "from the journal"  # finished by an earlier run: nothing sent now


@attrs.frozen
class ChargeSummary:
    """The ids of one run by fate, each in the order given.

    ``charged``: the POST was answered 2xx. ``not_charged``: answered with an error.
    ``not_sent``: no POST went out. ``maybe_charged``: a POST went out and no answer
    says what happened. ``unsaved``: charged (now or earlier) and last seen ``reviewing``.
    ``synthesizing``: charged and last seen before a final state.

    With a journal: ``charged_earlier``, charged by an earlier run of the batch and only
    followed (GETs) by this one; ``from_journal``, finished by an earlier run, their
    outcome read from the journal and nothing sent. Neither was charged by this run.
    ``journaled`` words the hints for a run that a re-run resumes.
    """

    charged: tuple[str, ...] = ()
    not_charged: tuple[str, ...] = ()
    not_sent: tuple[str, ...] = ()
    maybe_charged: tuple[str, ...] = ()
    unsaved: tuple[str, ...] = ()
    synthesizing: tuple[str, ...] = ()
    charged_earlier: tuple[str, ...] = ()
    from_journal: tuple[str, ...] = ()
    journaled: bool = False

    def to_json(self) -> dict[str, list[str]]:
        """Every list of ids by its field name (empty lists included)."""
        return {name: list(ids) for name, ids in attrs.asdict(self).items()
                if isinstance(ids, tuple)}

    @property
    def resumable(self) -> bool:
        """Whether ids were left that a re-run of a journaled batch would still send."""
        return bool(self.not_sent or self.maybe_charged)

    def lines(self) -> list[str]:
        """The summary for people: always the charged line, then the others that apply."""
        lines = [f"charged ({len(self.charged)}): {' '.join(self.charged)}".rstrip()]
        maybe = ("sent without an answer: resuming sends them again under the same "
                 "Idempotency-Key, so each is charged once at most") if self.journaled \
            else "sent without an answer: check them before sending again"
        hints = (
            ("charged earlier", self.charged_earlier,
             "by an earlier run of the batch; followed now, not charged again"),
            ("from the journal", self.from_journal,
             "finished by an earlier run of the batch; nothing sent now"),
            ("not charged", self.not_charged, "the API refused them"),
            ("not sent", self.not_sent, "no request went out"),
            ("maybe charged", self.maybe_charged, maybe),
            ("left unsaved", self.unsaved, "reviewing: accept with `aurous-async save ID`"),
            ("still synthesizing", self.synthesizing,
             "not saved yet: `aurous-async watch ID --auto-save` finishes them"),
        )
        for label, ids, hint in hints:
            if ids:
                lines.append(f"{label} ({len(ids)}): {' '.join(ids)}  [{hint}]")
        return lines

    def write(self, stream: TextIO, *, as_json: bool) -> None:
        """Print the summary on ``stream``: one JSON object, or the lines for people."""
        text = json.dumps(self.to_json()) if as_json else "\n".join(self.lines())
        stream.write(text + "\n")
        stream.flush()


class ChargeLedger:
    """The fate of each character of one run, updated as the run observes it."""

    def __init__(self, *, journaled: bool = False) -> None:
        self.journaled = journaled
        self._fate: dict[str, _Fate] = {}
        self._status: dict[str, CharacterStatus] = {}

    def __len__(self) -> int:
        """How many characters the run is about (0 until it knows its ids)."""
        return len(self._fate)

    def expect(self, ids: Iterable[str]) -> None:
        """The characters this run is about to resynthesize, in order: none sent yet."""
        for character_id in ids:
            self._fate.setdefault(character_id, _Fate.NOT_SENT)

    def charged_before(self, character_id: str) -> None:
        """An earlier run of the batch had its POST answered 2xx: this run only follows
        it, so whatever is seen of it, the charge is that run's."""
        self._fate[character_id] = _Fate.CHARGED_EARLIER

    def finished_before(self, character_id: str,
                        status: CharacterStatus | str | None) -> None:
        """Its outcome was read from the journal (an earlier run finished it; ``status``
        is its last status, if recorded): nothing was sent for it now."""
        self._fate[character_id] = _Fate.FROM_JOURNAL
        if status is not None:
            self._status[character_id] = CharacterStatus(status)

    def sending(self, character_id: str) -> None:
        """Its POST may go out from now on."""
        self._fate[character_id] = _Fate.SENDING

    def unsent(self, character_id: str) -> None:
        """Its POST was refused before any request (an argument check)."""
        self._fate[character_id] = _Fate.NOT_SENT

    def seen(self, character_id: str, status: CharacterStatus | str) -> None:
        """The character was seen in ``status`` after its POST: that POST was answered
        2xx (only a charged character is followed), so it is charged — by this run,
        unless an earlier run of the batch sent it (:meth:`charged_before`)."""
        if self._fate.get(character_id) is not _Fate.CHARGED_EARLIER:
            self._fate[character_id] = _Fate.CHARGED
        self._status[character_id] = CharacterStatus(status)

    def failed(self, character_id: str, error: AurousError) -> None:
        """The run ended for this character with ``error``. Before an answer to its POST,
        the error says whether the server may have acted on it; a character already
        charged or never sent keeps that fate."""
        if self._fate.get(character_id) is _Fate.SENDING:
            self._fate[character_id] = (
                _Fate.MAYBE_CHARGED if error.may_have_been_processed else _Fate.NOT_CHARGED
            )

    def summary(self) -> ChargeSummary:
        """The ids by fate; a POST still out when the run stopped is ``maybe_charged``."""

        def having(*fates: _Fate) -> tuple[str, ...]:
            return tuple(cid for cid, fate in self._fate.items() if fate in fates)

        # Charged by any run, and last seen where the user still has something to do.
        last = {cid: self._status[cid] for cid in having(
            _Fate.CHARGED, _Fate.CHARGED_EARLIER, _Fate.FROM_JOURNAL) if cid in self._status}
        return ChargeSummary(
            charged=having(_Fate.CHARGED),
            not_charged=having(_Fate.NOT_CHARGED),
            not_sent=having(_Fate.NOT_SENT),
            maybe_charged=having(_Fate.SENDING, _Fate.MAYBE_CHARGED),
            unsaved=tuple(cid for cid, status in last.items()
                          if status == CharacterStatus.REVIEWING),
            synthesizing=tuple(cid for cid, status in last.items() if not status.is_terminal),
            charged_earlier=having(_Fate.CHARGED_EARLIER),
            from_journal=having(_Fate.FROM_JOURNAL),
            journaled=self.journaled,
        )
