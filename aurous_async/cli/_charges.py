"""What a ``resynthesize`` run did to the bill, character by character.

The command records what it observes through the public API (a POST sent, its answer,
each status seen); whatever ends the run (success, an error, a timeout, Ctrl-C), the
summary says which characters were charged, which were never sent, which may have been
charged without an answer, and which are left unsaved.
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


@attrs.frozen
class ChargeSummary:
    """The ids of one run by fate, each in the order given.

    ``charged``: the POST was answered 2xx. ``not_charged``: answered with an error.
    ``not_sent``: no POST went out. ``maybe_charged``: a POST went out and no answer
    says what happened. ``unsaved``: charged and last seen ``reviewing``.
    ``synthesizing``: charged and last seen before a final state.
    """

    charged: tuple[str, ...] = ()
    not_charged: tuple[str, ...] = ()
    not_sent: tuple[str, ...] = ()
    maybe_charged: tuple[str, ...] = ()
    unsaved: tuple[str, ...] = ()
    synthesizing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        """Every field as a list of ids (empty lists included)."""
        return {name: list(ids) for name, ids in attrs.asdict(self).items()}

    def lines(self) -> list[str]:
        """The summary for people: always the charged line, then the others that apply."""
        lines = [f"charged ({len(self.charged)}): {' '.join(self.charged)}".rstrip()]
        hints = (
            ("not charged", self.not_charged, "the API refused them"),
            ("not sent", self.not_sent, "no request went out"),
            ("maybe charged", self.maybe_charged,
             "sent without an answer: check them before sending again"),
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

    def __init__(self) -> None:
        self._fate: dict[str, _Fate] = {}
        self._status: dict[str, CharacterStatus] = {}

    def __len__(self) -> int:
        """How many characters the run is about (0 until it knows its ids)."""
        return len(self._fate)

    def expect(self, ids: Iterable[str]) -> None:
        """The characters this run is about to resynthesize, in order: none sent yet."""
        for character_id in ids:
            self._fate.setdefault(character_id, _Fate.NOT_SENT)

    def sending(self, character_id: str) -> None:
        """Its POST may go out from now on."""
        self._fate[character_id] = _Fate.SENDING

    def unsent(self, character_id: str) -> None:
        """Its POST was refused before any request (an argument check)."""
        self._fate[character_id] = _Fate.NOT_SENT

    def seen(self, character_id: str, status: CharacterStatus | str) -> None:
        """The character was seen in ``status`` after its POST: that POST was answered
        2xx (only a charged character is followed), so it is charged."""
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

        charged = having(_Fate.CHARGED)
        return ChargeSummary(
            charged=charged,
            not_charged=having(_Fate.NOT_CHARGED),
            not_sent=having(_Fate.NOT_SENT),
            maybe_charged=having(_Fate.SENDING, _Fate.MAYBE_CHARGED),
            unsaved=tuple(cid for cid in charged
                          if self._status[cid] == CharacterStatus.REVIEWING),
            synthesizing=tuple(cid for cid in charged if not self._status[cid].is_terminal),
        )
