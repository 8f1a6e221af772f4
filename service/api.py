"""The HTTP API's bodies: what a request may hold (checked before any model work) and what each
answer holds. The limits come from ``ServiceSettings``; the OpenAPI document shows them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from core.labels import LABEL_CHARS
from core.store.rows import storable

# The schema declares this pattern and the check below applies it. It spells out every character
# that either Python or JSON Schema (ECMA-262) calls whitespace, instead of \s (on which they
# differ), so both read it the same: what the document calls valid is what the service accepts.
WHITESPACE = "\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{WHITESPACE}]"
_NOT_BLANK = re.compile(NOT_BLANK)
REQUEST_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def text_type(max_chars: int):
    """One text to classify: 1 to ``max_chars`` characters, not all whitespace; NUL and unpaired
    surrogates (no tokenizer or database takes them) become U+FFFD."""

    def checked(text: str) -> str:
        if len(text) > max_chars:
            raise ValueError(
                f"text has {len(text)} characters; the limit is {max_chars} (EMOTION_MAX_TEXT_CHARS)"
            )
        if not _NOT_BLANK.search(text):
            raise ValueError("text must contain at least one non-whitespace character")
        return storable(text)

    return Annotated[
        str,
        AfterValidator(checked),
        Field(
            description=f"The text to classify: 1 to {max_chars} characters, not all whitespace.",
            json_schema_extra={"pattern": NOT_BLANK, "maxLength": max_chars},
        ),
    ]


class EmotionPrediction(BaseModel):
    emotion: str = Field(description="The most likely emotion.")
    emotions: list[str] = Field(
        description="The emotions over their thresholds, most probable first (the most probable "
        "alone when none is over): a single-label model gives [emotion], so one client reads "
        "both kinds of model."
    )
    confidence: float = Field(description="Probability of that emotion.")
    all_emotions: dict[str, float] = Field(
        description="Probability of every emotion. A single-label model's sum to 1; a multi-label "
        "model's are independent (one per label) and need not."
    )
    uncertain: bool = Field(description="Confidence is under the service's threshold.")
    truncated: bool = Field(description="The text had more tokens than the model reads; the rest was cut.")
    tokens: int = Field(description="Tokens the model read.")
    novelty: float | None = Field(
        description="How unlike the model's training texts this text is: the Mahalanobis distance "
        "of the mean of the model's layers to the nearest class centre of its training texts "
        "(null: not scored)."
    )
    novel: bool | None = Field(
        description="The novelty is over the model's threshold (about 1 in 100 texts like the "
        "training data are; null: not scored)."
    )
    request_id: str = Field(description="Id for feedback and for the prediction log.")
    model_name: str
    model_version: str
    model_alias: str
    base_model: str
    latency_ms: float


class Feedback(BaseModel):
    request_id: str = Field(pattern=REQUEST_ID, description="The request_id of a prediction.")
    # Defaults are not validated: a key left out is None, an explicit null is refused (so the
    # types say str, not str | None: the document must not admit null).
    label: str = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        max_length=LABEL_CHARS,
        description="The true emotion (give this or labels).",
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=LABEL_CHARS)]] = Field(
        default=None,  # type: ignore[arg-type]
        min_length=1,
        max_length=100,  # the served model's own limit (core.labels.FeedbackRule) is checked by the service
        description="The true emotions (give this or label); more than one for a multi-label model only.",
    )

    @model_validator(mode="after")
    def _one_of(self):
        if (self.label is None) == (self.labels is None):
            raise ValueError("give exactly one of 'label' (one emotion) or 'labels' (a list, multi-label)")
        return self

    def given(self) -> list[str]:
        """The labels given, unique, in the order given."""
        return list(dict.fromkeys([self.label] if self.label is not None else self.labels))


class FeedbackReceipt(BaseModel):
    request_id: str
    label: str = Field(description="The label as stored (a multi-label answer: its labels joined by commas).")
    labels: list[str] = Field(description="The labels recorded.")
    status: str = Field(description="'recorded', or 'pending' until the prediction is logged.")
    predicted: str | None = Field(
        description="What the model predicted, as stored alike (null while pending)."
    )
    correct: bool | None = Field(
        description="Whether the prediction was right: for a multi-label model, its whole label "
        "set (null while pending)."
    )


class Acknowledgement(BaseModel):
    note: str | None = Field(default=None, max_length=1000, description="What the reviewer concluded.")


class AliasMove(BaseModel):
    version: str = Field(
        pattern=r"^[0-9]{1,12}$",
        description="The version the page showed (the challenger to approve, the champion to roll "
        "back): a page gone stale moves nothing.",
    )


class LabelDecision(BaseModel):
    action: Literal["release", "drop"] = Field(description="release: they may train; drop: never.")
    ids: list[Annotated[str, Field(pattern=REQUEST_ID)]] = Field(
        min_length=1, max_length=1000, description="Request ids of quarantined labels."
    )
