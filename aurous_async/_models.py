"""Value classes: what the API returns, as frozen attrs classes.

All are immutable and compare by value. Unknown fields from the server are ignored and
unknown enum values are kept (``CharacterStatus("queued")`` works), so a newer server
never crashes an older SDK. Every one has ``to_dict()`` (JSON-ready, e.g. to return from
a web framework); the API's own objects also have ``from_dict()``, its reverse.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._redact import redact_url

if TYPE_CHECKING:
    from ._errors import AurousError

__all__ = [
    "Balance",
    "BatchProgress",
    "BatchResult",
    "Character",
    "CharacterAttributes",
    "CharacterStatus",
    "DeletedCharacter",
    "Pose",
    "Ref",
    "StatusUpdate",
    "UploadClassification",
    "UploadTicket",
]


_D = TypeVar("_D", bound="_Decodable")

#: Unknown values of one open enum kept as shared objects (more are made afresh each time).
_MAX_CACHED_UNKNOWN = 64


class _OpenStrEnum(str, enum.Enum):
    """A string enum that keeps values it does not know instead of raising.

    An unknown value becomes a pseudo-member (not listed when iterating the class) whose
    ``is_known`` is false; it compares equal to its string like every member.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        # Cached like Flag's pseudo-members, so one unknown value is one object; but only
        # a few, so a server sending endless new values cannot grow memory for ever.
        if len(cls._value2member_map_) - len(cls.__members__) >= _MAX_CACHED_UNKNOWN:
            return member
        return cls._value2member_map_.setdefault(value, member)

    @property
    def is_known(self) -> bool:
        """Whether this value is one of the documented ones."""
        # By identity: an unknown "READY" has the name of the known "ready".
        return type(self).__members__.get(self._name_) is self

    def __str__(self) -> str:
        return str(self.value)


class CharacterStatus(_OpenStrEnum):
    """Where a character is in its lifecycle (the API reference, "Character lifecycle").

    >>> CharacterStatus("ready") is CharacterStatus.READY
    True
    >>> CharacterStatus("queued").is_known
    False
    """

    SYNTHESIZING = "synthesizing"
    REVIEWING = "reviewing"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """True for states no server-side work will move on from by itself
        (``reviewing`` waits for a save, so it counts as terminal)."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {CharacterStatus.REVIEWING, CharacterStatus.READY, CharacterStatus.FAILED,
     CharacterStatus.DELETED}
)


class Pose(_OpenStrEnum):
    """A reference image's pose: the five documented ones, or whatever a newer server
    sends."""

    PORTRAIT = "portrait"
    FRONT = "front"
    SIDE = "side"
    BACK = "back"
    OTHER = "other"


class _Serializable:
    """The base of the value classes: turns one into JSON-ready data."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This value as a JSON-ready ``dict``: enums as their strings (unknown ones too),
        times as ISO 8601 in UTC with ``Z``, tuples as lists, nested values as dicts;
        ``request_id`` is left out. Signed URLs keep their ``token`` (it is what makes
        them work), so treat the result as you would the URL.

        >>> Ref(Pose.FRONT, "https://cdn.example/front.png?token=abc").to_dict()
        {'pose': 'front', 'url': 'https://cdn.example/front.png?token=abc'}
        """
        # Imported here: the converter's module imports this one to know the classes.
        from ._convert import converter

        data: dict[str, Any] = converter.unstructure(self)
        return data


class _Decodable(_Serializable):
    """The base of the API's objects: they can be read back from ``to_dict()``'s output
    (or the API's own JSON)."""

    __slots__ = ()

    @classmethod
    def from_dict(cls: type[_D], data: Mapping[str, Any]) -> _D:
        """The value ``data`` describes, checked as strictly as an API response (unknown
        keys are ignored, unknown enum values kept). Raises ``ValueError`` naming what is
        wrong.

        >>> Ref.from_dict({"pose": "side", "url": "https://cdn.example/side.png"}).pose
        <Pose.SIDE: 'side'>
        """
        from ._convert import decode

        return decode(dict(data) if isinstance(data, Mapping) else data, cls, source="data")


@attrs.frozen
class Ref(_Decodable):
    """One reference image. ``url`` is a signed URL (valid ~24 h, no auth needed); its
    ``token`` is redacted in ``repr``."""

    pose: Pose
    url: str = attrs.field(repr=lambda url: repr(redact_url(url)))


@attrs.frozen(kw_only=True)
class CharacterAttributes(_Decodable):
    """The eight documented character attributes, all optional.

    >>> CharacterAttributes(gender="female", age=28)
    CharacterAttributes(gender='female', age=28, ethnicity=None, hair_color=None, hair_style=None, eye_color=None, body_type=None, additional_details=None)
    """  # noqa: E501

    gender: str | None = None
    age: int | None = None
    ethnicity: str | None = None
    hair_color: str | None = None
    hair_style: str | None = None
    eye_color: str | None = None
    body_type: str | None = None
    additional_details: str | None = None


@attrs.frozen(kw_only=True)
class Character(_Decodable):
    """A character as the API last reported it.

    ``request_id`` is the ``Aurous-Request-Id`` of the response it came from (not part of
    equality).
    """

    id: str
    status: CharacterStatus
    name: str = ""
    refs: tuple[Ref, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    attributes: CharacterAttributes | None = None
    error_message: str | None = None
    aurous_version: str | None = None
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class DeletedCharacter(_Decodable):
    """The answer to a delete."""

    id: str
    deleted: bool
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class UploadTicket(_Decodable):
    """A minted upload: ``PUT`` the image bytes to ``upload_url`` with
    ``upload_headers`` within 15 minutes, then pass ``upload_id`` to ``create``."""

    upload_id: str
    upload_url: str = attrs.field(repr=lambda url: repr(redact_url(url)))
    upload_headers: Mapping[str, str] = attrs.field(factory=dict)
    expires_at: datetime | None = None
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class UploadClassification(_Decodable):
    """The detected pose of an uploaded image (informational, not a gate)."""

    upload_id: str
    pose: Pose
    confidence: float
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class Balance(_Decodable):
    """The team's credit balance."""

    credits: float
    available_credits: float
    held_credits: float = 0.0
    currency: str = "credit"
    billing_mode: str | None = None
    request_id: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class StatusUpdate(_Decodable):
    """One step of a watched character.

    ``previous_status`` is ``None`` on the first update; ``terminal`` is true on the last;
    ``polls`` counts the GETs observed so far for this watch and ``elapsed`` the seconds
    since it began. A ``queued`` update (``resynthesize_and_watch(queued=True)``) comes
    before the paid call is sent: its ``estimated_wait`` says how long the call waits for
    its rate-limit token (``None`` when the limiter cannot tell).
    """

    character: Character
    status: CharacterStatus
    previous_status: CharacterStatus | None
    terminal: bool
    polls: int
    elapsed: float
    estimated_wait: float | None = None

    @property
    def queued(self) -> bool:
        """True for the update sent before the paid call, while it waits for its turn."""
        return self.status == "queued"

    @property
    def failed(self) -> bool:
        """True when the character ended ``failed``. ``watch()`` ends normally then,
        without raising (unless given ``raise_on_failure=True``), so a loop over updates
        checks this to tell a failure from a success."""
        return self.status == CharacterStatus.FAILED


@attrs.frozen(kw_only=True)
class BatchResult(_Serializable):
    """The outcome of one character in ``resynthesize_many``: its final ``character``,
    or the ``error`` that ended it (``character`` is then the last state seen, if any).

    ``to_dict()`` gives the error as ``{"error_class", "code", "message", "status",
    "request_id"}`` (the ones it lacks as ``None``), never the exception itself; there is
    no ``from_dict()``, as an exception cannot be rebuilt from that.
    """

    character_id: str
    character: Character | None = None
    error: AurousError | None = None
    #: True when this outcome was read from a journal (an earlier run finished it) and no
    #: request was made for it now.
    from_journal: bool = False

    @property
    def ok(self) -> bool:
        """True when the run of this character ended well (``ready``, or ``reviewing``
        without ``auto_save``); ``False`` whenever ``error`` is set — failed, deleted
        during the batch, timed out, or never sent."""
        return self.error is None


@attrs.frozen(kw_only=True)
class BatchProgress(_Decodable):
    """Counts of one ``resynthesize_many`` run, passed to its ``progress`` callback.

    ``queued`` are not sent yet, ``dispatched`` have their POST on the wire (its
    rate-limit token taken), ``synthesizing`` are being watched, ``done`` ended well and
    ``failed`` with an error (undispatched ones after a 402 included). ``charged`` counts
    the POSTs the server accepted. ``gets`` counts the session's polls. ``character_id``
    and ``state`` say what just changed (``None`` on the first call): ``state`` is
    ``"dispatched"``, a status value such as ``"synthesizing"`` or ``"reviewing"``,
    ``"done"`` or ``"failed"``.
    """

    total: int
    queued: int
    dispatched: int
    synthesizing: int
    done: int
    failed: int
    gets: int
    charged: int = 0
    character_id: str | None = None
    state: str | None = None
