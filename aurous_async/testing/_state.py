"""The fake server's state and the rules that change it: teams and keys, characters
and their synthesis, uploads, credits and the charge ledger.

Handlers change the state only through :class:`FakeState`'s public methods, so every
rule (a 404 for another team's id, a charge per paid call, a synthesis that ends on
the clock) lives in one place. Nothing here imports the client side of the SDK.
"""

from __future__ import annotations

import collections
import random
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from .._clock import Clock
from ._errors import ApiError, invalid, not_found
from ._ids import new_id
from ._records import (
    DEFAULT_BUCKETS,
    DEFAULT_VERSION,
    KNOWN_VERSIONS,
    POSES,
    STATUSES,
    SYNTH_POSES,
    UPLOAD_TICKET_TTL,
    BucketLimit,
    CharacterRecord,
    Charge,
    FakeTeam,
    RecordedRequest,
    TokenBucket,
    UploadRecord,
    iso,
    new_api_key,
    new_team,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "KNOWN_VERSIONS",
    "POSES",
    "STATUSES",
    "BucketLimit",
    "Charge",
    "FakeState",
    "FakeTeam",
    "RecordedRequest",
    "SynthesisListener",
    "TokenBucket",
]

SYNTHESIS_COST = 4.0
REGENERATE_COST = 1.0


class SynthesisListener(Protocol):
    """Told when a synthesis starts and when it ends (the webhooks listen)."""

    def synthesis_started(self, record: CharacterRecord) -> None:
        """``record`` went to ``synthesizing``; it ends at ``record.synthesis_done_at``."""

    def synthesis_ended(self, record: CharacterRecord) -> None:
        """``record`` left ``synthesizing`` (to its outcome, or ``failed``)."""


class FakeState:
    """Everything the fake knows, and the only way to change it.

    The settings (``synthesis_seconds``, ``after_resynthesis``, ...) are plain
    attributes: a test may change them between requests, and the next request obeys.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        synthesis_seconds: float,
        synthesis_jitter: float,
        bucket_limits: Mapping[str, BucketLimit],
        after_resynthesis: str,
        failure_rate: float,
        insufficient_credits_code: str,
        rate_limit_header_prefix: str,
        seed: int,
    ) -> None:
        self.clock = clock
        self.synthesis_seconds = synthesis_seconds
        self.synthesis_jitter = synthesis_jitter
        self.bucket_limits: dict[str, BucketLimit] = {**DEFAULT_BUCKETS, **bucket_limits}
        self.after_resynthesis = after_resynthesis
        self.failure_rate = failure_rate
        self.insufficient_credits_code = insufficient_credits_code
        self.rate_limit_header_prefix = rate_limit_header_prefix
        self.keep_request_log = True
        #: Every request seen (while ``keep_request_log``), in arrival order.
        self.requests: list[RecordedRequest] = []
        #: Every charge, in billing order.
        self.ledger: list[Charge] = []
        #: 429 answers per bucket name.
        self.rate_limited: collections.Counter[str] = collections.Counter()
        #: ``/v1/`` requests read and not yet answered (a test driving a FakeClock waits
        #: for none before it moves time, so a round trip takes no virtual time).
        self.requests_in_progress = 0
        #: Where the server listens (``""`` until started); signed URLs point there.
        self.base_url = ""
        self.listeners: list[SynthesisListener] = []
        self._rng = random.Random(seed)
        self._teams: dict[str, FakeTeam] = {}
        self._key_index: dict[str, FakeTeam] = {}
        self._seq = 0
        self._pending_failures: dict[str, str] = {}

    # -- teams and keys ----------------------------------------------------------------

    def add_team(self, *, name: str, credits: float, api_key: str | None, scope: str,
                 pinned_version: str) -> FakeTeam:
        """Create a team with one key (given or freshly minted)."""
        team = new_team(name, credits, self.clock.time())
        team.pinned_version = pinned_version
        self._teams[team.id] = team
        self.add_key(team, api_key or new_api_key(), scope=scope)
        return team

    def add_key(self, team: FakeTeam, api_key: str, *, scope: str) -> str:
        """Give ``team`` another key with ``scope`` (``read``, ``write`` or ``full``)."""
        if scope not in ("read", "write", "full"):
            raise ValueError("scope must be read, write or full")
        if api_key in self._key_index:
            raise ValueError("that key already belongs to a team")
        team.keys[api_key] = scope
        self._key_index[api_key] = team
        return api_key

    def revoke_key(self, api_key: str) -> None:
        """Revoke a key (``KeyError`` when no team has it)."""
        self._key_index[api_key].revoked_keys.add(api_key)

    def team_for_key(self, api_key: str) -> FakeTeam | None:
        """The team a key belongs to, revoked or not; ``None`` for an unknown key."""
        return self._key_index.get(api_key)

    def team(self, team_id: str) -> FakeTeam:
        """A team by id (``KeyError`` when unknown)."""
        return self._teams[team_id]

    def bucket(self, team: FakeTeam, name: str) -> TokenBucket:
        """The team's bucket called ``name``, made full on first use."""
        bucket = team.buckets.get(name)
        if bucket is None:
            bucket = team.buckets[name] = TokenBucket(self.bucket_limits[name],
                                                       self.clock.monotonic())
        return bucket

    # -- characters --------------------------------------------------------------------

    def new_character(self, team: FakeTeam, name: str, attributes: dict[str, Any] | None,
                      version: str = DEFAULT_VERSION) -> CharacterRecord:
        """Store a new ``ready`` character with no refs."""
        self._seq += 1
        wall = self.clock.time()
        record = CharacterRecord(
            id=new_id("char", wall), team_id=team.id, name=name, status="ready",
            created_at=wall, updated_at=wall, seq=self._seq, attributes=attributes, refs=[],
            aurous_version=version,
        )
        team.characters[record.id] = record
        return record

    def seed_character(self, team: FakeTeam, *, name: str, status: str,
                       attributes: dict[str, Any]) -> CharacterRecord:
        """A character put straight into ``status``, uncharged (for test set-up)."""
        record = self.new_character(team, name, attributes)
        record.status = status
        if status == "synthesizing":
            record.synthesis_done_at = self.clock.monotonic() + self.synthesis_seconds
            for listener in self.listeners:
                listener.synthesis_started(record)
        if status in ("reviewing", "ready"):
            record.refs = self.make_refs(record.id, SYNTH_POSES)
        return record

    def make_refs(self, character_id: str, poses: tuple[str, ...]) -> list[dict[str, str]]:
        """Fresh signed ref URLs for ``poses``, served by this fake."""
        base = f"{self.base_url}/_storage/{character_id}"
        return [
            {"pose": pose, "url": f"{base}/{pose}?token={secrets.token_urlsafe(24)}"}
            for pose in poses
        ]

    def find_character(self, team: FakeTeam, character_id: str) -> CharacterRecord:
        """The team's character, settled; 404 for unknown, deleted or another team's."""
        record = team.characters.get(character_id)
        if record is None or record.status == "deleted":
            raise not_found()
        self.settle(record)
        return record

    def find_any_character(self, character_id: str) -> CharacterRecord:
        """A character of any team, deleted ones included (for test assertions)."""
        for team in self._teams.values():
            if character_id in team.characters:
                return team.characters[character_id]
        raise not_found()

    def touch(self, record: CharacterRecord) -> None:
        """Mark a character as changed now."""
        record.updated_at = self.clock.time()

    def create_from_uploads(self, team: FakeTeam, name: str, attributes: dict[str, Any] | None,
                            version: str, uploads: list[UploadRecord],
                            poses: list[str]) -> CharacterRecord:
        """A ``ready`` character whose refs are ``uploads`` (consumed), one per pose."""
        record = self.new_character(team, name, attributes, version)
        for upload in uploads:
            upload.consumed = True
        record.refs = [ref for pose in poses for ref in self.make_refs(record.id, (pose,))]
        return record

    def update_character(self, record: CharacterRecord, changes: Mapping[str, Any]) -> None:
        """Apply validated PATCH fields: ``name``, and ``attributes`` (replaced wholesale)."""
        if "name" in changes:
            record.name = changes["name"]
        if "attributes" in changes:
            record.attributes = changes["attributes"]
        self.touch(record)

    def save_character(self, record: CharacterRecord) -> None:
        """``reviewing`` becomes ``ready``; ``ready`` stays; anything else is a 400."""
        if record.status == "reviewing":
            record.status = "ready"
            self.touch(record)
        elif record.status != "ready":
            raise invalid("invalid_request_error",
                          f"Character is {record.status}; only reviewing characters can be saved.")

    def delete_character(self, team: FakeTeam, record: CharacterRecord) -> None:
        """Hard-delete a character in review, soft-delete any other."""
        if record.status == "reviewing":
            del team.characters[record.id]
            return
        record.status = "deleted"
        record.synthesis_done_at = None
        self.touch(record)

    def fail_next_synthesis(self, character_id: str, message: str) -> None:
        """Make the next synthesis of ``character_id`` end in ``failed``."""
        self._pending_failures[character_id] = message

    def begin_synthesis(self, record: CharacterRecord, outcome: str,
                        poses: tuple[str, ...]) -> None:
        """Start a synthesis of ``poses`` that ends in ``outcome`` (or ``failed``)."""
        record.status = "synthesizing"
        record.error_message = None
        self.touch(record)
        spread = self._rng.uniform(-self.synthesis_jitter, self.synthesis_jitter)
        record.synthesis_done_at = self.clock.monotonic() + self.synthesis_seconds * (1 + spread)
        record.synthesis_outcome = outcome
        record.synthesis_poses = poses
        failure = self._pending_failures.pop(record.id, None)
        if failure is None and self.failure_rate and self._rng.random() < self.failure_rate:
            failure = "Synthesis provider returned an error."
        record.synthesis_error = failure
        for listener in self.listeners:
            listener.synthesis_started(record)
        self.settle(record)

    def settle(self, record: CharacterRecord) -> None:
        """Finish a synthesis whose time has come (lazily, on the next look, or when a
        listener's timer fires)."""
        if record.status != "synthesizing" or record.synthesis_done_at is None:
            return
        if self.clock.monotonic() < record.synthesis_done_at:
            return
        record.synthesis_done_at = None
        self.touch(record)
        if record.synthesis_error is not None:
            record.status = "failed"
            record.error_message = record.synthesis_error
        else:
            record.status = record.synthesis_outcome
            fresh = {ref["pose"]: ref for ref in self.make_refs(record.id, record.synthesis_poses)}
            kept = [ref for ref in record.refs if ref["pose"] not in fresh]
            record.refs = [*fresh.values(), *kept]
        for listener in self.listeners:
            listener.synthesis_ended(record)

    def finish_synthesis(self, character_id: str) -> None:
        """End a running synthesis now, whatever the clock says."""
        record = self.find_any_character(character_id)
        if record.status == "synthesizing":
            record.synthesis_done_at = self.clock.monotonic()
            self.settle(record)

    def render(self, record: CharacterRecord) -> dict[str, Any]:
        """The character as the API returns it."""
        return {
            "id": record.id,
            "object": "character",
            "name": record.name,
            "status": record.status,
            "refs": [dict(ref) for ref in record.refs],
            "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at),
            "attributes": dict(record.attributes) if record.attributes is not None else None,
            "error_message": record.error_message,
            "aurous_version": record.aurous_version,
        }

    # -- uploads -----------------------------------------------------------------------

    def new_upload(self, team: FakeTeam, filename: str, extension: str,
                   content_type: str) -> UploadRecord:
        """Mint an upload ticket with a signed PUT URL."""
        upload = UploadRecord(
            id=new_id("upl", self.clock.time()), team_id=team.id, filename=filename,
            extension=extension, content_type=content_type, created_at=self.clock.monotonic(),
            signature=secrets.token_urlsafe(24),
        )
        team.uploads[upload.id] = upload
        return upload

    def find_upload(self, upload_id: str) -> UploadRecord | None:
        """An upload ticket of any team."""
        for team in self._teams.values():
            if upload_id in team.uploads:
                return team.uploads[upload_id]
        return None

    def receive_upload(self, upload: UploadRecord, data: bytes) -> None:
        """Keep the bytes PUT to an upload's signed URL."""
        upload.data = data

    def upload_usable(self, upload: UploadRecord) -> bool:
        """Uploaded, not yet used by a create, and not expired."""
        return (not upload.consumed and upload.data is not None
                and self.clock.monotonic() - upload.created_at <= UPLOAD_TICKET_TTL)

    # -- credits -----------------------------------------------------------------------

    def require_credits(self, team: FakeTeam, cost: float) -> None:
        """402 unless the team can pay ``cost``."""
        if team.credits < cost:
            raise ApiError(402, "invalid_request", self.insufficient_credits_code,
                           f"Team available balance is {team.credits:g} credits, "
                           f"the call requires {cost:g}.")

    def charge(self, team: FakeTeam, character_id: str, operation: str, cost: float,
               request_id: str) -> None:
        """Bill ``cost`` credits and write it in the ledger."""
        team.credits -= cost
        self.ledger.append(Charge(team.id, character_id, operation, cost, request_id))

