"""BentoML wiring: the public API service and, optionally, a batched model service behind it.

``EmotionService`` (public) validates input, assigns request ids, exports metrics and logs each
prediction. By default it also holds the registry champion itself, behind the in-process
dynamic batcher (``service.batching``): concurrent requests' texts share one forward pass with
no network hop. With ``EMOTION_MODEL_IN_PROCESS=false`` the champion runs in ``EmotionModel``, a
second BentoML service with BentoML's adaptive batching (slower on 2 cores; README,
Performance). Inference itself lives in ``emotion_ops.predictor``; this module only wires it to
HTTP.

Run: ``emotion-ops serve`` (it execs ``bentoml serve`` with this service's settings; a bare
``bentoml serve`` binds 0.0.0.0 by default, so set ``EMOTION_HOST`` to match and a key).
"""

import asyncio
import logging
import os
import random
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, Field

from emotion_ops.settings import Settings
from monitoring.prediction_log import (
    PredictionLogWriter,
    PredictionStore,
    redact,
    spool_dir_for,
    storable,
)
from monitoring.reports import ReportIndex, ReportNotFound
from service.batching import Overloaded
from service.guard import RequestGuard, bound_endpoint_labels, say_error
from service.metrics import (
    BATCH_SIZE,
    BATCHER_SHED,
    CONFIDENCE,
    FEEDBACK,
    FEEDBACK_CORRECT,
    INPUT_TOKENS,
    LOG_DROPPED,
    LOG_QUEUE_DEPTH,
    LOG_REJECTED,
    LOG_SPOOL_BYTES,
    LOG_SPOOL_LIMIT,
    LOG_WRITE_FAILURES,
    LOG_WRITER_ERRORS,
    MODEL_INFO,
    PREDICTIONS,
    TRUNCATED,
    UNCERTAIN,
)
from service.openapi import exact_document

log = logging.getLogger(__name__)

# Read once at import for what decorators need (limits, batching); models load in __init__.
SETTINGS = Settings()
MAX_BATCH_TEXTS = SETTINGS.max_batch_texts
MAX_TEXT_CHARS = SETTINGS.max_text_chars
# Package data (pyproject.toml): the wheel the image installs carries these files.
STATIC = Path(__file__).parent / "static"
UI_PAGE = (STATIC / "ui.html").read_text(encoding="utf-8")
DOCS_PAGE = (STATIC / "docs.html").read_text(encoding="utf-8")
DOCS_INIT = (STATIC / "docs-init.js").read_text(encoding="utf-8")
# The docs page may load this service's own assets and nothing else.
DOCS_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
REPORT_FIELDS = (
    "id",
    "created_at",
    "model_version",
    "verdict",
    "drifted_share",
    "window_rows",
    "labelled_rows",
    "live_accuracy",
    "status",
    "decision",
    "decision_reason",
    "action",
)


# The schema declares this pattern and the check below applies it. It spells out every character
# that either Python or JSON Schema (ECMA-262) calls whitespace, instead of \s (on which they
# differ), so both read it the same: what the document calls valid is what the service accepts.
WHITESPACE = "\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{WHITESPACE}]"
_NOT_BLANK = re.compile(NOT_BLANK)


def _checked_text(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"text has {len(text)} characters; the limit is {MAX_TEXT_CHARS} (EMOTION_MAX_TEXT_CHARS)"
        )
    if not _NOT_BLANK.search(text):
        raise ValueError("text must contain at least one non-whitespace character")
    # NUL and unpaired surrogates: no tokenizer or database takes them.
    return storable(text)


Text = Annotated[
    str,
    AfterValidator(_checked_text),
    Field(
        description=f"The text to classify: 1 to {MAX_TEXT_CHARS} characters, not all whitespace.",
        json_schema_extra={"pattern": NOT_BLANK, "maxLength": MAX_TEXT_CHARS},
    ),
]


class EmotionPrediction(BaseModel):
    emotion: str = Field(description="The most likely emotion.")
    confidence: float = Field(description="Probability of that emotion.")
    all_emotions: dict[str, float] = Field(description="Probability of every emotion.")
    uncertain: bool = Field(description="Confidence is under the service's threshold.")
    truncated: bool = Field(description="The text had more tokens than the model reads; the rest was cut.")
    tokens: int = Field(description="Tokens the model read.")
    request_id: str = Field(description="Id for feedback and for the prediction log.")
    model_name: str
    model_version: str
    model_alias: str
    base_model: str
    latency_ms: float


REQUEST_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class Feedback(BaseModel):
    request_id: str = Field(pattern=REQUEST_ID, description="The request_id of a prediction.")
    label: str = Field(min_length=1, max_length=100, description="The true emotion.")


class FeedbackReceipt(BaseModel):
    request_id: str
    label: str
    status: str = Field(description="'recorded', or 'pending' until the prediction is logged.")
    predicted: str | None = Field(description="What the model predicted (null while pending).")
    correct: bool | None = Field(description="Whether the prediction was right (null while pending).")


@bentoml.service(name="emotion-model", workers=1, traffic={"timeout": 60})
class EmotionModel:
    """Internal: the champion model behind adaptive batching."""

    def __init__(self) -> None:
        from service.champion import ChampionHolder

        settings = Settings()
        # The only model process on the machine: all cores, unless told otherwise.
        settings = settings.model_copy(update={"threads": settings.threads or os.cpu_count()})
        self.holder = ChampionHolder(settings, on_swap=_export_model_info)
        self.holder.start()

    @bentoml.api(
        batchable=True, max_batch_size=SETTINGS.batch_max_size, max_latency_ms=SETTINGS.batch_max_latency_ms
    )
    def classify(self, texts: list[str]) -> list[dict]:
        return classify_with(self.holder.current, texts)

    @bentoml.api
    def describe(self) -> dict:
        return self.holder.current.describe()

    @bentoml.on_shutdown
    def stop_refresh(self) -> None:
        self.holder.stop()


def classify_with(served, texts: list[str]) -> list[dict]:
    """One forward over ``texts`` with ``served`` (one model for the whole batch, even mid-swap).

    Each result names the model that made it, so a swap mid-request never mislabels one.
    """
    identity = {
        "name": served.name,
        "version": served.version,
        "alias": served.alias,
        "base_model": served.base_model,
    }
    return [
        {
            "emotion": p.emotion,
            "confidence": p.confidence,
            "probabilities": p.probabilities,
            "truncated": p.truncated,
            "tokens": p.tokens,
            "model": identity,
        }
        for p in served.predictor.predict(texts)
    ]


def _export_model_info(old, new) -> None:
    if old is not None:
        MODEL_INFO.labels(old.name, old.version, old.alias, old.base_model, str(old.quantized)).set(0)
    MODEL_INFO.labels(new.name, new.version, new.alias, new.base_model, str(new.quantized)).set(1)


web = FastAPI(title="emotion-ops extras", docs_url=None, redoc_url=None, openapi_url=None)


@web.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


@web.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    details = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", "")} for item in error.errors()]
    return JSONResponse({"error": "invalid request body", "detail": details}, status_code=400)


@bentoml.service(
    name="emotion-service",
    traffic={"timeout": 60},
    workers=SETTINGS.workers,
    logging={"access": {"enabled": SETTINGS.access_log}},
    # BentoML wraps every request in OpenTelemetry spans even with no exporter; off, its
    # middleware lets every URL straight through.
    **({} if SETTINGS.tracing else {"tracing": {"excluded_urls": [".*"]}}),
)
@bentoml.asgi_app(web, path="/")
class EmotionService:
    """Emotion classification API over the registry champion."""

    # The model runs in this process by default; as its own service only when asked (read at import).
    if not SETTINGS.model_in_process:
        model = bentoml.depends(EmotionModel)

    def __init__(self) -> None:
        self.settings = Settings()
        self.settings.check_serving_security()
        self.holder = self.batcher = None
        if self.settings.model_in_process:
            self._start_model()
        self.store = PredictionStore.from_url(self.settings.log_store_url)
        LOG_SPOOL_LIMIT.set(self.settings.spool_max_bytes)
        self.writer = PredictionLogWriter(
            self.store,
            spool_dir_for(self.settings.spool_dir, self.settings.log_store_url),
            max_queue=self.settings.log_queue_size,
            max_queue_bytes=self.settings.log_queue_bytes,
            spool_max_bytes=self.settings.spool_max_bytes,
            on_write_failure=LOG_WRITE_FAILURES.inc,
            on_depth=LOG_QUEUE_DEPTH.set,
            on_dropped=LOG_DROPPED.inc,
            on_rejected=LOG_REJECTED.inc,
            on_spool_bytes=LOG_SPOOL_BYTES.set,
            on_error=LOG_WRITER_ERRORS.inc,
        )
        self._reports: ReportIndex | None = None
        self._document: tuple[tuple[str, ...], dict] | None = None

    def _start_model(self) -> None:
        """The champion in this process, behind the in-process dynamic batcher (no second
        service, no network hop per request)."""
        from service.batching import MicroBatcher
        from service.champion import ChampionHolder

        self.holder = ChampionHolder(self.settings, on_swap=_export_model_info)
        self.holder.start()
        self.batcher = MicroBatcher(
            lambda texts: classify_with(self.holder.current, texts),
            max_batch=self.settings.batch_max_size,
            max_wait_ms=self.settings.batch_max_wait_ms,
            max_queued_texts=self.settings.batch_queue_limit,
            on_batch=BATCH_SIZE.observe,
        )

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        if self.holder is not None:
            self.holder.stop()
            self.batcher.close()
        self.writer.close()

    @bentoml.api(route="/predict")
    async def predict(self, text: Text) -> EmotionPrediction:
        """Classify one text."""
        return (await self._predict([text]))[0]

    @bentoml.api(route="/predict_batch")
    async def predict_batch(
        self,
        texts: Annotated[
            list[Text],
            Field(min_length=1, max_length=MAX_BATCH_TEXTS, description=f"1 to {MAX_BATCH_TEXTS} texts."),
        ],
    ) -> list[EmotionPrediction]:
        """Classify several texts in one request."""
        return await self._predict(texts)

    async def _predict(self, texts: list[str]) -> list[EmotionPrediction]:
        started = time.perf_counter()
        results = await self._classify(texts)
        latency_ms = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        predictions, rows = [], []
        for text, result in zip(texts, results, strict=True):
            model = result["model"]
            prediction = EmotionPrediction(
                emotion=result["emotion"],
                confidence=result["confidence"],
                all_emotions=result["probabilities"],
                uncertain=result["confidence"] < self.settings.uncertain_below,
                truncated=result["truncated"],
                tokens=result["tokens"],
                # One id per text, even when adaptive batching merged it with other requests.
                request_id=str(uuid.uuid4()),
                model_name=model["name"],
                model_version=model["version"],
                model_alias=model["alias"],
                base_model=model["base_model"],
                latency_ms=round(latency_ms, 2),
            )
            predictions.append(prediction)
            if not self.settings.monitoring:
                continue
            _count(prediction)
            if self.settings.log_sample_rate >= 1 or random.random() < self.settings.log_sample_rate:
                rows.append(self._log_row(text, prediction, now))
        if rows:
            self.writer.submit(rows)
        return predictions

    async def _classify(self, texts: list[str]) -> list[dict]:
        """Call the model service; retry once when a kept-alive connection was closed under us.

        Classification has no side effects, so a retry is safe; a second failure means the
        model service is down and the client gets a 503.
        """
        if self.batcher is not None:
            try:
                return await self.batcher.submit(texts)
            except Overloaded as error:
                BATCHER_SHED.inc(len(texts))
                say_error(str(error))  # the guard adds Retry-After to every 503
                raise ServiceUnavailable(str(error)) from None
        import aiohttp

        for attempt in range(2):
            try:
                return await self.model.to_async.classify(texts)
            except aiohttp.ClientConnectionError as error:
                log.warning("model service connection failed (attempt %d): %s", attempt + 1, error)
        raise ServiceUnavailable("the model service is unavailable; retry shortly")

    def _log_row(self, text: str, prediction: EmotionPrediction, now: datetime) -> dict:
        if self.settings.log_redact:
            text = redact(text)  # linear time: it runs on the event loop
        return {
            "id": prediction.request_id,
            "created_at": now,
            "model_name": prediction.model_name,
            "model_version": prediction.model_version,
            "text": text,
            "emotion": prediction.emotion,
            "confidence": prediction.confidence,
            "probabilities": prediction.all_emotions,
            "latency_ms": prediction.latency_ms,
            "truncated": prediction.truncated,
            "tokens": prediction.tokens,
            "uncertain": prediction.uncertain,
        }

    async def _description(self) -> dict:
        """What the model service serves now (name, version, alias, labels, test metrics)."""
        if self.holder is not None:
            return self.holder.current.describe()
        return await self.model.to_async.describe()

    @web.get("/model")
    async def model_info(self) -> dict:
        """Name, version, alias, base model, labels and test metrics of the served model."""
        return await self._description()

    @web.get("/labels")
    async def labels(self) -> dict:
        """The emotions the served model predicts."""
        description = await self._description()
        return {"labels": description["labels"], "model_version": description["version"]}

    @web.post(
        "/feedback",
        response_model=FeedbackReceipt,
        responses={202: {"model": FeedbackReceipt, "description": "Pending: not logged yet."}},
    )
    async def feedback(self, body: Feedback) -> JSONResponse:
        """Store the true label for a logged prediction (needs the API key: labels train models).

        A prediction still on its way to the log (queued in another worker or pod) gets the
        label when it arrives: the answer is then 202, ``pending``."""
        description = await self._description()
        if body.label not in description["labels"]:
            raise HTTPException(400, f"unknown label '{body.label}'; expected one of {description['labels']}")
        try:
            # Blocking work (queue flush, database) runs in a thread, not on the event loop.
            row = await asyncio.to_thread(self._store_feedback, body.request_id, body.label)
        except Exception as error:
            log.warning("feedback not stored: %s", error)
            raise HTTPException(503, "the prediction log store is unavailable; retry later") from None
        if row is None:
            receipt = FeedbackReceipt(
                request_id=body.request_id, label=body.label, status="pending", predicted=None, correct=None
            )
            return JSONResponse(receipt.model_dump(), status_code=202)
        FEEDBACK.labels(row["model_version"]).inc()
        correct = row["emotion"] == body.label
        if correct:
            FEEDBACK_CORRECT.labels(row["model_version"]).inc()
        receipt = FeedbackReceipt(
            request_id=body.request_id,
            label=body.label,
            status="recorded",
            predicted=row["emotion"],
            correct=correct,
        )
        return JSONResponse(receipt.model_dump())

    def _store_feedback(self, request_id: str, label: str) -> dict | None:
        self.writer.flush(timeout=2.0)  # the prediction may still be queued in this worker
        return self.store.record_feedback_or_pending(
            request_id, label, keep_hours=self.settings.feedback_pending_hours
        )

    @web.get("/reports")
    async def reports(self, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
        """The latest drift reports (verdict, status, trigger decision), newest first."""
        try:
            rows = await asyncio.to_thread(lambda: self._report_index().list(limit))
        except Exception as error:
            log.warning("report index unavailable: %s", error)
            raise HTTPException(503, "the report index is unavailable; retry later") from None
        return {"reports": [{key: row[key] for key in REPORT_FIELDS} for row in rows]}

    @web.get("/reports/{report_id}")
    async def report(self, report_id: str):
        """A drift report's Evidently page ('latest' for the newest); its JSON summary when the
        page's file is not on this host (the monitor job may run elsewhere)."""
        try:
            row = await asyncio.to_thread(self._find_report, report_id)
        except Exception as error:
            log.warning("report index unavailable: %s", error)
            raise HTTPException(503, "the report index is unavailable; retry later") from None
        if row is None:
            raise HTTPException(
                404, f"no drift report '{report_id}'; the monitor job has not written one yet"
            )
        html = Path(row["html_path"]).resolve() if row["html_path"] else None
        # Only ever a report page under this host's reports folder, whatever the index says.
        if html and html.is_file() and html.is_relative_to(self.settings.reports_root.resolve()):
            return FileResponse(html, media_type="text/html")
        return JSONResponse(
            {
                **row["summary"],
                "status": row["status"],
                "decision": row["decision"],
                "decision_reason": row["decision_reason"],
                "action": row["action"],
            }
        )

    def _find_report(self, report_id: str) -> dict | None:
        index = self._report_index()
        if report_id == "latest":
            return index.latest()
        try:
            return index.get(report_id)
        except ReportNotFound:
            return None

    def _report_index(self) -> ReportIndex:
        if self._reports is None:
            index = ReportIndex(self.store.engine)
            index.create_schema()
            self._reports = index
        return self._reports

    @web.get("/ui", response_class=HTMLResponse)
    async def ui(self) -> HTMLResponse:
        """A page to try the classifier by hand."""
        return HTMLResponse(UI_PAGE)

    # Before BentoML's own "/" and "/docs.json" (mounted routes match first): its page embeds a
    # tag manager, and its document misses statuses and error bodies (service.openapi).
    @web.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def docs_page(self) -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE, headers={"content-security-policy": DOCS_POLICY})

    @web.get("/docs/init.js", include_in_schema=False)
    async def docs_script(self) -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    @web.get("/docs.json", include_in_schema=False)
    async def docs_document(self) -> JSONResponse:
        """The exact OpenAPI document, with the served model's labels (rebuilt on a swap)."""
        labels = tuple((await self._description())["labels"])
        if self._document is None or self._document[0] != labels:
            generated = EmotionService.openapi_spec.asdict()
            document = exact_document(generated, list(labels), api_key=self.settings.api_key is not None)
            self._document = (labels, document)
        return JSONResponse(self._document[1])


def _count(prediction: EmotionPrediction) -> None:
    version = prediction.model_version
    PREDICTIONS.labels(prediction.emotion, version).inc()
    CONFIDENCE.labels(version).observe(prediction.confidence)
    INPUT_TOKENS.observe(prediction.tokens)
    if prediction.truncated:
        TRUNCATED.labels(version).inc()
    if prediction.uncertain:
        UNCERTAIN.labels(version).inc()


EmotionService.add_asgi_middleware(
    RequestGuard,
    api_key=SETTINGS.api_key.get_secret_value() if SETTINGS.api_key else None,
    max_body_bytes=SETTINGS.body_limit_bytes,
)
bound_endpoint_labels()
