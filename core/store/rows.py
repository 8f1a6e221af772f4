"""One logged prediction's row: the only place its layout is written, and the text hygiene
every row gets before it is stored (the label rules are ``core.labels``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# Linear time on any input: a match may only start where a run of its characters starts (the
# look-behinds), and a run is either taken whole without backtracking (possessive ++, e-mail)
# or bounded (phone numbers stay under 24 characters), so no start position rescans a token.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)+")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().-]{7,22}\d(?!\w)")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def redact(text: str) -> str:
    """Replace e-mail addresses, URLs and phone numbers with placeholders."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _URL.sub("[URL]", text)
    return _PHONE.sub("[PHONE]", text)


def storable(text: str) -> str:
    """The text with what no database column takes (NUL, unpaired surrogates) replaced by U+FFFD.

    PostgreSQL refuses NUL in text and no UTF-8 encoder takes a lone surrogate; either would
    make the whole batch fail.
    """
    return _UNSTORABLE.sub("\ufffd", text)


def prediction_row(
    *,
    request_id: str,
    created_at: datetime,
    model_name: str,
    model_version: str,
    text: str,
    emotion: str,
    confidence: float,
    probabilities: dict[str, float],
    latency_ms: float,
    truncated: bool,
    tokens: int,
    uncertain: bool,
    redacted: bool = False,
    novelty: float | None = None,
    novel: bool | None = None,
) -> dict[str, Any]:
    """The ``predictions`` row of one classified text (``redacted``: with e-mail addresses,
    URLs and phone numbers replaced)."""
    return {
        "id": request_id,
        "created_at": created_at,
        "model_name": model_name,
        "model_version": model_version,
        "text": redact(text) if redacted else text,
        "emotion": emotion,
        "confidence": confidence,
        "probabilities": probabilities,
        "latency_ms": latency_ms,
        "truncated": truncated,
        "tokens": tokens,
        "uncertain": uncertain,
        "novelty": novelty,
        "novel": novel,
    }
