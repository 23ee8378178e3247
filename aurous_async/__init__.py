"""aurous-async: the asyncio SDK for the Aurous Labs image API.

::

    import aurous_async as aa

    async with aa.AurousSession() as s:   # reads $AUROUS_API_KEY
        async for update in s.characters.resynthesize_and_watch("char_…", auto_save=True):
            print(update.status)
"""

from . import webhooks
from ._clock import Clock, FakeClock, ScaledClock, SystemClock
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AurousError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IdempotencyKeyInUseError,
    InsufficientCreditsError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    SessionClosedError,
    SynthesisFailedError,
    WatchTimeoutError,
)
from ._journal import BatchInUseError, JournalError, JournalRecord, JournalState, LeaseLostError
from ._journal_batch import Journal
from ._journal_redis import RedisJournal
from ._journal_sqlite import SQLiteJournal
from ._logging import setup_logging_from_env
from ._models import (
    Balance,
    BatchProgress,
    BatchResult,
    Character,
    CharacterAttributes,
    CharacterStatus,
    DeletedCharacter,
    Pose,
    Ref,
    StatusUpdate,
    UploadClassification,
    UploadTicket,
)
from ._polling import PollPolicy
from ._ratelimit import (
    InMemoryRateLimiter,
    RateLimit,
    RateLimiter,
    RateLimitFeedback,
    RateLimits,
)
from ._redis import RateLimiterUnavailableError, RedisRateLimiter
from ._session import AurousSession
from ._version import __version__
from .resources._raw import RawResponse
from .webhooks import (
    DeletedWebhookEndpoint,
    EventType,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTestFire,
    WebhookVerificationError,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AurousError",
    "AurousSession",
    "AuthenticationError",
    "Balance",
    "BatchInUseError",
    "BatchProgress",
    "BatchResult",
    "Character",
    "CharacterAttributes",
    "CharacterStatus",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "DeletedCharacter",
    "DeletedWebhookEndpoint",
    "EventType",
    "FakeClock",
    "IdempotencyKeyInUseError",
    "InMemoryRateLimiter",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Journal",
    "JournalError",
    "JournalRecord",
    "JournalState",
    "LeaseLostError",
    "MalformedResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "Pose",
    "RateLimit",
    "RateLimitError",
    "RateLimitFeedback",
    "RateLimiter",
    "RateLimiterUnavailableError",
    "RateLimits",
    "RawResponse",
    "RedisJournal",
    "RedisRateLimiter",
    "Ref",
    "SQLiteJournal",
    "ScaledClock",
    "ServerError",
    "SessionClosedError",
    "StatusUpdate",
    "SynthesisFailedError",
    "SystemClock",
    "UploadClassification",
    "UploadTicket",
    "WatchTimeoutError",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookTestFire",
    "WebhookVerificationError",
    "__version__",
    "webhooks",
]

# AUROUS_LOG=debug|info|warning switches the SDK's logger on (as OPENAI_LOG does).
setup_logging_from_env()
