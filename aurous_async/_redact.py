"""Keeping secrets out of text: API keys and signed-URL tokens never reach a log line,
a ``repr`` or an exception message."""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import CIMultiDict

# Query parameters that carry a credential: Aurous signed URLs, and the S3 and GCS
# presigned upload URLs the API may hand out.
_SECRET_QUERY = re.compile(
    r"([?&](?:token|signature|sig|key|api_key|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&#\s\"']*",
    re.IGNORECASE,
)
_KEY_PREFIXES = ("al_live_", "al_test_", "og_")
_API_KEY = re.compile(r"\b(al_live_|al_test_|og_)[A-Za-z0-9_\-]{6,}")
_PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")


def redact_url(url: str) -> str:
    """``url`` with its credential query values replaced by ``…``.

    >>> redact_url("https://x/front.bin?token=abc&w=2")
    'https://x/front.bin?token=…&w=2'
    """
    return _SECRET_QUERY.sub(r"\1…", url)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets, anything shaped like an API key, and signed-URL
    tokens removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _API_KEY.sub(lambda m: m.group(1) + "…", redact_url(text))
    return _WEBHOOK_SECRET.sub("whsec_…", text) if "whsec_" in text else text


def safe_request_id(text: str, *secrets: str | None) -> str:
    """An answer's request id as it may be shown: as it is when it is a plain identifier
    holding none of ``secrets`` (the usual ``req_01…``), else through :func:`redact` (a
    server may echo secrets)."""
    # An ASCII identifier is told without the regular expression, which costs more; one
    # shaped like any API key (not only ours) is no plain id.
    # (Written out, not any(...): this runs on every answer.)
    plain = ((len(text) <= 128 and text.isascii() and text.isidentifier())
             or _PLAIN_REQUEST_ID.match(text) is not None) \
        and "al_live_" not in text and "al_test_" not in text and "og_" not in text
    for secret in secrets:
        if secret and secret in text:
            plain = False
    return text if plain else redact(text, *secrets)


def redact_headers(headers: Mapping[str, str], *secrets: str | None) -> CIMultiDict[str]:
    """A copy of ``headers`` with :func:`redact` applied to every value."""
    return CIMultiDict((name, redact(value, *secrets)) for name, value in headers.items())


def key_hint(api_key: str) -> str:
    """A safe hint of which key is in use: its prefix and last four characters."""
    prefix = next((p for p in _KEY_PREFIXES if api_key.startswith(p)), "")
    return f"{prefix}…{api_key[-4:]}" if len(api_key) >= 12 else "…"


# Webhook signing secrets (``whsec_…``): the prefix stays so a reader knows what was there.
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_\-]+")

