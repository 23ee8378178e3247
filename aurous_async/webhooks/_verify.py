"""Checking a delivery's ``Aurous-Webhook-Signature`` (api-spec.md §5).

The header is ``t=<unix seconds>,v1=<hex>``, where ``v1`` is the hex HMAC-SHA256, keyed
with the endpoint's secret, of ``"{t}.{raw body}"``. Order of the checks, and why:

1. a missing or unreadable header fails before any HMAC is computed;
2. the signature is checked before the timestamp, so ``expired`` always means "genuine
   but late" (a replay, or a clock minutes off) and a forgery is always ``mismatch``;
3. the body is parsed as JSON only once the signature holds: nothing an attacker sends
   reaches the JSON parser.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Sequence

from .._validate import number
from ._models import WebhookEvent, WebhookVerificationError, event_from_envelope

__all__ = ["SIGNATURE_HEADER", "Keys", "check_secrets", "check_tolerance", "verify",
           "verify_with_keys"]

#: The request header that carries the signature.
SIGNATURE_HEADER = "Aurous-Webhook-Signature"

#: Secrets encoded once: the HMAC keys to try, in order.
Keys = tuple[bytes, ...]

# A real header is ~80 characters; a cap keeps a hostile one from costing more than a
# few hundred comparisons.
_MAX_HEADER = 8192
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_secrets(secret: object) -> Keys:
    """``secret`` (one ``str`` or a non-empty sequence of them, for rotation) as HMAC
    keys; ``TypeError``/``ValueError`` otherwise. Messages name types, never values."""
    if isinstance(secret, str):
        secrets: Sequence[object] = (secret,)
    elif isinstance(secret, Sequence) and not isinstance(secret, (bytes, bytearray)):
        secrets = secret
        if not secrets:
            raise ValueError("secret must not be an empty sequence")
    else:
        raise TypeError("secret must be a str or a sequence of str, "
                        f"not {type(secret).__name__}")
    keys = []
    for item in secrets:
        if not isinstance(item, str):
            raise TypeError(f"each secret must be a str, not {type(item).__name__}")
        if not item:
            raise ValueError("a secret must not be empty")
        try:
            keys.append(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("a secret must be valid text (it holds a lone surrogate)") \
                from None
    return tuple(keys)


def check_tolerance(tolerance: object) -> float:
    """The replay window in seconds: a finite number >= 0."""
    return number(tolerance, "tolerance", minimum=0)


def _parse(signature: str) -> tuple[str, list[str]]:
    """The header's ``t`` (as sent: it is part of the signed text) and its ``v1``
    values, lower-cased. Other schemes (``v0=``, a future ``v2=``) are skipped."""
    if len(signature) > _MAX_HEADER:
        raise WebhookVerificationError("the signature header is too long", reason="malformed")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookVerificationError(
                "the signature header is not a list of key=value pairs", reason="malformed")
        if key == "t":
            if timestamp is not None:
                raise WebhookVerificationError(
                    "the signature header has more than one t=", reason="malformed")
            if not _TIMESTAMP.fullmatch(value):
                raise WebhookVerificationError(
                    "the signature header's t= is not a Unix time in seconds",
                    reason="malformed")
            timestamp = value
        elif key == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise WebhookVerificationError(
                    "a v1= signature is not 64 hex digits", reason="malformed")
            candidates.append(value.lower())
    if timestamp is None:
        raise WebhookVerificationError("the signature header has no t=", reason="malformed")
    if not candidates:
        raise WebhookVerificationError("the signature header has no v1=", reason="malformed")
    return timestamp, candidates


def verify_with_keys(
    payload: bytes, signature: str | None, keys: Keys, tolerance: float, now: float
) -> WebhookEvent:
    """:func:`verify` on arguments already checked (the handler checks them once)."""
    if signature is None or not signature.strip():
        raise WebhookVerificationError(f"no {SIGNATURE_HEADER} header", reason="missing")
    timestamp, candidates = _parse(signature)
    signed = timestamp.encode("ascii") + b"." + payload
    matched = False
    for key in keys:
        expected = hmac.digest(key, signed, "sha256").hex()
        for candidate in candidates:
            # Constant-time, and every pair is compared: timing says nothing about
            # which secret or which v1 matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError(
            "no v1 signature matches the webhook secret(s)", reason="mismatch")
    skew = now - int(timestamp)
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(
            f"the signature is {abs(skew):.0f} s {direction}, beyond the "
            f"{tolerance:g} s tolerance", reason="expired")
    try:
        envelope = json.loads(payload)
    except (ValueError, RecursionError):
        raise WebhookVerificationError(
            "the signed payload is not valid JSON", reason="malformed") from None
    try:
        return event_from_envelope(envelope)
    except ValueError as exc:
        raise WebhookVerificationError(str(exc), reason="malformed") from None


def verify(
    payload: bytes | bytearray | memoryview | str,
    signature: str | None,
    secret: str | Sequence[str],
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> WebhookEvent:
    """Check a webhook delivery and return its event.

    ``payload`` is the raw request body, exactly as received (a ``str`` is encoded as
    UTF-8; never pass re-serialized JSON). ``signature`` is the
    ``Aurous-Webhook-Signature`` header (``None`` when absent). ``secret`` is the
    endpoint's ``whsec_…`` secret, or several during a rotation: any ``v1`` value
    matching any of them passes. A timestamp more than ``tolerance`` seconds from
    ``now`` (default: the current Unix time) is refused as ``expired``.

    Raises :class:`WebhookVerificationError` (a ``ValueError``; ``.reason`` says why)
    for anything a sender controls, ``TypeError``/``ValueError`` for bad arguments.

    ::

        event = aa.webhooks.verify(body, request.headers.get("Aurous-Webhook-Signature"),
                                   os.environ["AUROUS_WEBHOOK_SECRET"])
    """
    if not isinstance(payload, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
    if signature is not None and not isinstance(signature, str):
        raise TypeError(f"signature must be a str or None, not {type(signature).__name__}")
    keys = check_secrets(secret)
    checked_tolerance = check_tolerance(tolerance)
    when = time.time() if now is None else number(now, "now", minimum=0)
    if isinstance(payload, str):
        try:
            body = payload.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: no body the API sent decodes to this text.
            raise WebhookVerificationError(
                "the payload is not valid UTF-8 text", reason="malformed") from None
    else:
        body = bytes(payload)
    return verify_with_keys(body, signature, keys, checked_tolerance, when)
