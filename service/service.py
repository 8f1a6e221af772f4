"""BentoML wiring: the public API over the registry champion. Nothing here but wiring.

Each worker holds the champion (``service.champion``) behind the dynamic batcher
(``core.inference.batching``): concurrent requests' texts share one forward pass with no
network hop. Every answer is logged through ``core.store`` (the writer, off the request path)
and counted in ``service.metrics``; ``service.guard`` checks keys and bounds before any of it.

BentoML's decorators take their options at import, so ``SETTINGS`` is read once here for them
(workers, logging, tracing, the body schema's limits, the guard); the service itself reads its
own copy when a worker starts it.

Run: ``emotion-ops serve`` (it execs ``bentoml serve`` with this service's settings; a bare
``bentoml serve`` binds 0.0.0.0 by default, so set ``EMOTION_HOST`` to match and a key).
"""

import asyncio
import logging
import math
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import Field

from core.access import Role
from core.inference.batching import MicroBatcher, Overloaded
from core.labels import QUARANTINED, ReviewStatus, decided_labels, joined_labels
from core.registry import (
    RegistryError,
    approve_challenger,
    connect,
    rollback_champion,
    version_rows,
)
from core.settings import ServiceSettings
from core.shadow import ShadowShortfall
from core.store import ReportIndex, Store
from core.store.reports import DECISION_FIELDS, ReportNotFound, listing
from core.store.review import LabelNotListed, review_labels
from core.store.rows import prediction_row
from core.store.writer import PredictionLogWriter, spool_dir_for
from service import console
from service.api import (
    Acknowledgement,
    AliasMove,
    EmotionPrediction,
    Feedback,
    FeedbackReceipt,
    LabelDecision,
    text_type,
)
from service.champion import ChampionHolder
from service.guard import RequestGuard, bound_endpoint_labels, key_name, key_role, say_error
from service.metrics import (
    BATCH_SIZE,
    BATCHER_SHED,
    FEEDBACK,
    FEEDBACK_CORRECT,
    FORWARD_CPU_SECONDS,
    FORWARD_SECONDS,
    LOG_SPOOL_LIMIT,
    SHADOW_QUEUE_DEPTH,
    SHADOW_SCORED,
    SHADOW_SKIPPED,
    WORKERS,
    count_prediction,
    export_model_info,
    log_writer_callbacks,
)
from service.openapi import exact_document
from service.shadow import ShadowScorer

log = logging.getLogger(__name__)

SETTINGS = ServiceSettings()
MAX_BATCH_TEXTS = SETTINGS.max_batch_texts
Text = text_type(SETTINGS.max_text_chars)
# Package data (pyproject.toml): the wheel the image installs carries these files.
STATIC = Path(__file__).parent / "static"
UI_PAGE = (STATIC / "ui.html").read_text(encoding="utf-8")
DOCS_PAGE = (STATIC / "docs.html").read_text(encoding="utf-8")
DOCS_INIT = (STATIC / "docs-init.js").read_text(encoding="utf-8")
CONSOLE_PAGE = (STATIC / "console.html").read_text(encoding="utf-8")
CONSOLE_ASSETS = {
    "console.js": ((STATIC / "console.js").read_text(encoding="utf-8"), "text/javascript"),
    "console.css": ((STATIC / "console.css").read_text(encoding="utf-8"), "text/css"),
}
# The docs page may load this service's own assets and nothing else.
DOCS_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
# The console: its own script and style files only, no inline script, no outside host; the
# report frame is this origin's sandboxed page.
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# An Evidently page holds logged texts: served as a sandbox (an opaque origin: its scripts, and
# anything a text might smuggle in, cannot read the console's key or call this service with it)
# that may run its own inline scripts and reach nothing outside the page.
REPORT_PAGE_POLICY = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; frame-ancestors 'self'"
)
SECURE_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}

web = FastAPI(title="emotion-ops extras", docs_url=None, redoc_url=None, openapi_url=None)


@web.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


@web.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    details = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", "")} for item in error.errors()]
    return JSONResponse({"error": "invalid request body", "detail": details}, status_code=400)


def _store_unavailable(what: str, error: Exception) -> HTTPException:
    log.warning("%s unavailable: %s", what, error)
    return HTTPException(503, f"the {what} is unavailable; retry later")


@bentoml.service(
    name="emotion-service",
    traffic={"timeout": 60},
    workers=SETTINGS.workers,
    logging={"access": {"enabled": SETTINGS.access_log}},
    # BentoML wraps every request in OpenTelemetry spans even with no exporter; off, its
    # middleware lets every URL straight through.
    **({} if SETTINGS.tracing else {"tracing": {"excluded_urls": [".*"]}}),
    **({"metrics": {"enabled": False}} if "request-metrics" in SETTINGS.request_path_ablation else {}),
)
@bentoml.asgi_app(web, path="/")
class EmotionService:
    """Emotion classification API over the registry champion."""

    def __init__(self) -> None:
        self.settings = ServiceSettings()
        self.settings.check_serving_security()
        self.holder = ChampionHolder(self.settings, on_swap=export_model_info)
        self.holder.start()
        self.batcher = MicroBatcher(
            self._forward,
            max_batch=self.settings.batch_max_size,
            max_wait_ms=self.settings.batch_max_wait_ms,
            max_queued_texts=self.settings.batch_queue_limit,
            on_batch=BATCH_SIZE.observe,
        )
        # The database may be down at start: the writer spools until it answers.
        self.store = Store.connect(self.settings.log_store_url)
        LOG_SPOOL_LIMIT.set(self.settings.spool_max_bytes)
        self.writer = PredictionLogWriter(
            self.store.predictions,
            spool_dir_for(self.settings.spool_dir, self.settings.log_store_url),
            max_queue=self.settings.log_queue_size,
            max_queue_bytes=self.settings.log_queue_bytes,
            spool_max_bytes=self.settings.spool_max_bytes,
            **log_writer_callbacks(),
        )
        # The waiting challenger scores a sampled share of the logged traffic (service.shadow).
        self.shadow = ShadowScorer(
            self.settings,
            self.store.shadow,
            on_scored=lambda version, agreed: SHADOW_SCORED.labels(
                version, "agree" if agreed else "differ"
            ).inc(),
            on_skipped=lambda reason, count: SHADOW_SKIPPED.labels(reason).inc(count),
            on_depth=SHADOW_QUEUE_DEPTH.set,
        )
        if self.settings.monitoring:
            self.shadow.start()
        self._count_predictions = "model-metrics" not in self.settings.request_path_ablation
        if self.settings.request_path_ablation:
            log.warning(
                "EMOTION_REQUEST_PATH_ABLATION switches off %s: for emotion-ops bench path only, "
                "unset it in production",
                ", ".join(sorted(self.settings.request_path_ablation)),
            )
        WORKERS.set(self.settings.workers)
        self._document: tuple[tuple[str, ...], dict] | None = None
        self._schema_ready = False
        self._ticket_secret = console.ticket_secret(self.settings.keys_with_roles())

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        self.holder.stop()
        self.shadow.stop()
        self.batcher.close()
        self.writer.close()

    def _forward(self, texts: list[str]):
        """One batch through the served model (on the batcher's thread), timed for the metrics."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            return self.holder.current.predict(texts)
        finally:
            FORWARD_CPU_SECONDS.inc(time.thread_time() - cpu_started)
            FORWARD_SECONDS.inc(time.perf_counter() - started)

    @bentoml.api(route="/predict")
    async def predict(self, text: Text) -> EmotionPrediction:  # type: ignore[valid-type]
        """Classify one text."""
        return (await self._predict([text]))[0]

    @bentoml.api(route="/predict_batch")
    async def predict_batch(
        self,
        texts: Annotated[  # type: ignore[valid-type]
            list[Text],
            Field(min_length=1, max_length=MAX_BATCH_TEXTS, description=f"1 to {MAX_BATCH_TEXTS} texts."),
        ],
    ) -> list[EmotionPrediction]:
        """Classify several texts in one request."""
        return await self._predict(texts)

    async def _predict(self, texts: list[str]) -> list[EmotionPrediction]:
        started = time.perf_counter()
        try:
            results = await self.batcher.submit(texts)
        except Overloaded as error:
            BATCHER_SHED.inc(len(texts))
            say_error(str(error))  # the guard adds Retry-After to every 503
            raise ServiceUnavailable(str(error)) from None
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        now = datetime.now(UTC)
        answers, rows = [], []
        for text, (model, result) in zip(texts, results, strict=True):
            answer = EmotionPrediction(
                emotion=result.emotion,
                emotions=list(result.emotions),
                confidence=result.confidence,
                all_emotions=result.probabilities,
                uncertain=result.confidence < self.settings.uncertain_below,
                truncated=result.truncated,
                tokens=result.tokens,
                novelty=result.novelty,
                novel=result.novel,
                # One id per text, even when the batcher merged it with other requests.
                request_id=str(uuid.uuid4()),
                model_name=model.name,
                model_version=model.version,
                model_alias=model.alias,
                base_model=model.base_model,
                latency_ms=latency_ms,
            )
            answers.append(answer)
            if not self.settings.monitoring:
                continue
            if self._count_predictions:
                count_prediction(answer)
            if self.settings.log_sample_rate >= 1 or random.random() < self.settings.log_sample_rate:
                rows.append(
                    prediction_row(
                        request_id=answer.request_id,
                        created_at=now,
                        model_name=answer.model_name,
                        model_version=answer.model_version,
                        text=text,
                        emotion=answer.emotion,
                        confidence=answer.confidence,
                        probabilities=answer.all_emotions,
                        latency_ms=answer.latency_ms,
                        truncated=answer.truncated,
                        tokens=answer.tokens,
                        uncertain=answer.uncertain,
                        novelty=answer.novelty,
                        novel=answer.novel,
                        redacted=self.settings.log_redact,  # linear time: it runs on the event loop
                    )
                )
                # Logged texts only: the shadow's rows join the log for the text and any label.
                if self.shadow.wanted():
                    self.shadow.offer(answer.request_id, text, model.version, joined_labels(answer.emotions))
        if rows:
            self.writer.submit(rows)
        return answers

    @web.get("/model")
    async def model_info(self) -> dict:
        """Name, version, alias, base model, labels and test metrics of the served model."""
        return self.holder.current.describe()

    @web.get("/labels")
    async def labels(self) -> dict:
        """The emotions the served model predicts."""
        served = self.holder.current
        return {"labels": list(served.labels), "model_version": served.version}

    @web.post(
        "/feedback",
        response_model=FeedbackReceipt,
        responses={202: {"model": FeedbackReceipt, "description": "Pending: not logged yet."}},
    )
    async def feedback(self, body: Feedback) -> JSONResponse:
        """Store the true label(s) for a logged prediction (needs the API key: labels train models).

        A single-label model takes ``label``; a multi-label one takes ``labels`` (a list; ``label``
        for one). A prediction still on its way to the log (queued in another worker or pod)
        gets the label when it arrives: the answer is then 202, ``pending``."""
        served = self.holder.current
        rule, given = served.feedback_rule, body.given()
        unknown = rule.unknown(given)
        if unknown:
            raise HTTPException(400, f"unknown label(s) {unknown}; expected one of {list(served.labels)}")
        # Counted as sent: the document's maxItems bounds the list, repeats included.
        if body.labels is not None and rule.too_many(body.labels):
            kind = "multi-label" if served.multilabel else "single-label"
            given_count = len(body.labels)
            raise HTTPException(
                400, f"the served model is {kind}: give at most {rule.max_labels} label(s), not {given_count}"
            )
        stored = joined_labels(given)
        source = f"key:{key_name()}"
        try:
            refusal = await asyncio.to_thread(self._over_quota, source)
        except Exception as error:
            raise _store_unavailable("prediction log store", error) from None
        if refusal is not None:
            message, retry_after = refusal
            return JSONResponse(
                {"error": message}, status_code=429, headers={"retry-after": str(retry_after)}
            )
        try:
            # Blocking work (queue flush, database) runs in a thread, not on the event loop.
            row = await asyncio.to_thread(self._store_feedback, body.request_id, stored, source)
        except Exception as error:
            raise _store_unavailable("prediction log store", error) from None
        receipt = FeedbackReceipt(
            request_id=body.request_id,
            label=stored,
            labels=stored.split(","),
            status="pending",
            predicted=None,
            correct=None,
        )
        if row is None:
            return JSONResponse(receipt.model_dump(), status_code=202)
        FEEDBACK.labels(row["model_version"]).inc()
        # A multi-label prediction is its decided set, from the logged probabilities and the
        # thresholds of the version that made it (this one, or its top label when it was another).
        made_here = (row["model_name"], row["model_version"]) == (served.name, served.version)
        predicted = (
            decided_labels(row["probabilities"], served.thresholds or {})
            if served.multilabel and made_here
            else row["emotion"]
        )
        correct = predicted == stored
        if correct:
            FEEDBACK_CORRECT.labels(row["model_version"]).inc()
        recorded = receipt.model_copy(
            update={"status": "recorded", "predicted": predicted, "correct": correct}
        )
        return JSONResponse(recorded.model_dump())

    def _over_quota(self, source: str) -> tuple[str, int] | None:
        """Why ``source`` may not give another label now, and in how many seconds it may; None
        when it may. Counted in the store, so every worker and pod counts the same labels."""
        now = datetime.now(UTC)
        hourly, window = self.settings.label_quota_per_hour, self.settings.label_quota_per_window
        if hourly is not None:
            given, oldest = self.store.predictions.labels_given(source, now - timedelta(hours=1))
            if given >= hourly:
                # One more label is allowed once the oldest of the hour's has aged out of it.
                wait = (oldest + timedelta(hours=1) - now).total_seconds() if oldest else 60.0
                return (
                    f"{source} has given {given} labels in the last hour; its quota is {hourly} an hour "
                    f"(EMOTION_LABEL_QUOTA_PER_HOUR)",
                    max(1, math.ceil(wait)),
                )
        if window is not None:
            since = self._report_index().last_triggered_at(self.settings.model_name)
            given, _ = self.store.predictions.labels_given(source, since)
            if given >= window:
                return (
                    f"{source} has given {given} labels since the last retrain; its quota is {window} "
                    "until the next one (EMOTION_LABEL_QUOTA_PER_WINDOW)",
                    3600,
                )
        return None

    def _store_feedback(self, request_id: str, label: str, source: str) -> dict | None:
        self.writer.flush(timeout=2.0)  # the prediction may still be queued in this worker
        return self.store.predictions.record_feedback_or_pending(
            request_id, label, keep_hours=self.settings.feedback_pending_hours, source=source
        )

    @web.get("/reports")
    async def reports(self, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
        """The latest drift reports (verdict, status, trigger decision), newest first."""
        try:
            rows = await asyncio.to_thread(lambda: self._report_index().list(limit))
        except Exception as error:
            raise _store_unavailable("report index", error) from None
        return {"reports": [listing(row) for row in rows]}

    @web.get("/reports/{report_id}")
    async def report(self, report_id: str):
        """A drift report's Evidently page ('latest' for the newest); its JSON summary when the
        page's file is not on this host (the monitor job may run elsewhere)."""
        try:
            row = await asyncio.to_thread(lambda: self._report_index().find(report_id))
        except Exception as error:
            raise _store_unavailable("report index", error) from None
        if row is None:
            raise HTTPException(
                404, f"no drift report '{report_id}'; the monitor job has not written one yet"
            )
        html = self._report_page_file(row)
        if html is not None:
            return FileResponse(html, media_type="text/html", headers=self._report_page_headers())
        return JSONResponse({**row["summary"], **{key: row[key] for key in DECISION_FIELDS}})

    @web.get("/reports/{report_id}/page", response_class=HTMLResponse)
    async def report_page(self, report_id: str, ticket: Annotated[str, Query(max_length=200)]):
        """A drift report's Evidently page for the console's sandboxed frame, which cannot send
        the key: ``ticket`` is the one ``/console/api/reports/{report_id}`` gave (minutes long)."""
        if not console.ticket_is_valid(self._ticket_secret, report_id, ticket):
            raise HTTPException(
                403, "this page's ticket is invalid or has expired: reopen the report in the console"
            )
        try:
            row = await asyncio.to_thread(lambda: self._report_index().find(report_id))
        except Exception as error:
            raise _store_unavailable("report index", error) from None
        html = self._report_page_file(row) if row is not None else None
        if html is None:
            raise HTTPException(404, f"no Evidently page for drift report '{report_id}' on this host")
        return FileResponse(html, media_type="text/html", headers=self._report_page_headers())

    def _report_page_file(self, row: dict) -> Path | None:
        html = Path(row["html_path"]).resolve() if row["html_path"] else None
        # Only ever a report page under this host's reports folder, whatever the index says.
        if html and html.is_file() and html.is_relative_to(self.settings.reports_root.resolve()):
            return html
        return None

    @staticmethod
    def _report_page_headers() -> dict[str, str]:
        return {"content-security-policy": REPORT_PAGE_POLICY, "cache-control": "no-store", **SECURE_HEADERS}

    def _report_index(self) -> ReportIndex:
        # Tables made on first use, not at start: the database may have been down then.
        if not self._schema_ready:
            self.store.create_schema()
            self._schema_ready = True
        return self.store.reports

    # The review console (service.console). Its data routes need review; its actions admin
    # (core.access.ROUTE_ROLES): the guard refuses any other key before these run.
    @web.get("/console", response_class=HTMLResponse)
    async def console_page(self) -> HTMLResponse:
        """The review console: drift reports, versions, labels, in one page (asks for a review key)."""
        return HTMLResponse(
            CONSOLE_PAGE, headers={"content-security-policy": CONSOLE_POLICY, **SECURE_HEADERS}
        )

    @web.get("/console/{asset}", include_in_schema=False)
    async def console_asset(self, asset: str) -> Response:
        if asset not in CONSOLE_ASSETS:
            raise HTTPException(404, f"no console asset '{asset}'")
        body, media_type = CONSOLE_ASSETS[asset]
        return Response(body, media_type=media_type, headers=SECURE_HEADERS)

    @web.get("/console/api/whoami")
    async def console_whoami(self) -> dict:
        """The name and role of the key this request came with, and what the console may do."""
        role = key_role()
        return {
            "key": key_name(),
            "role": role.value,
            "may_act": role.allows(Role.ADMIN),
            "model": self.settings.model_name,
            "serving": self.holder.current.version,
        }

    @web.get("/console/api/timeline")
    async def console_timeline(self, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:
        """Drift reports, retrains, promotions, rollbacks and quarantines, newest first, linked."""

        def gather() -> list[dict]:
            reports = self._report_index().list(limit)
            labels = self.store.predictions.feedback_rows(self.settings.model_name)
            return console.timeline(reports, self._versions(), labels)[:limit]

        return {"events": await self._console_read(gather)}

    @web.get("/console/api/reports/{report_id}")
    async def console_report(self, report_id: str) -> dict:
        """A drift report as the console shows it, with a ticket for its Evidently page."""

        def gather() -> dict:
            index = self._report_index()
            report = index.named(report_id)
            view = console.report_view(report, index.list(30))
            if view["has_page"]:
                ticket = console.report_ticket(self._ticket_secret, report["id"])
                view["page"] = f"/reports/{report['id']}/page?ticket={ticket}"
            return view

        return await self._console_read(gather)

    @web.post("/console/api/reports/{report_id}/ack")
    async def console_acknowledge(self, report_id: str, body: Acknowledgement) -> dict:
        """Mark a report as reviewed, with a note (admin)."""
        reviewer = f"key:{key_name()}"
        report = await self._console_read(
            lambda: self._report_index().acknowledge(report_id, reviewer, body.note)
        )
        return {"id": report["id"], "status": report["status"], "acked_by": report["acked_by"]}

    @web.get("/console/api/versions")
    async def console_versions(self) -> dict:
        """Champion and challenger cards side by side, and every registered version."""
        return await self._console_read(lambda: console.version_cards(self._versions()))

    @web.post("/console/api/promote")
    async def console_promote(self, body: AliasMove) -> dict:
        """Approve the waiting challenger whose gate passed (admin; 'emotion-ops promote --approve')."""
        client, name, by = connect(self.settings), self.settings.model_name, f"key:{key_name()}"
        # The shadow's bar: these settings' and whatever the gate recorded on the version.
        check = self.settings.shadow_requirement().check_for(lambda: self.store.shadow, name)
        new, old = await self._console_read(
            lambda: approve_challenger(client, name, by, check, expected_version=body.version)
        )
        return {"champion": new, "previous": old, **await self._serve_new_champion()}

    @web.post("/console/api/rollback")
    async def console_rollback(self, body: AliasMove) -> dict:
        """Move the champion back to the version it replaced (admin; 'emotion-ops rollback')."""
        client, name, by = connect(self.settings), self.settings.model_name, f"key:{key_name()}"
        old, new = await self._console_read(
            lambda: rollback_champion(client, name, by=by, expected_version=body.version)
        )
        return {"champion": new, "previous": old, **await self._serve_new_champion()}

    async def _serve_new_champion(self) -> dict:
        # The alias has moved whatever happens here: a worker that cannot load the new champion
        # now keeps serving the old one and retries at its next refresh, like every other.
        try:
            await asyncio.to_thread(self.holder.refresh)
        except Exception as error:
            log.warning("the champion moved; this worker serves it at its next refresh: %s", error)
            return {"note": "the champion moved; the service swaps it in within its refresh interval"}
        return {}

    @web.get("/console/api/shadow")
    async def console_shadow(self) -> dict:
        """The waiting challenger's answers on sampled live traffic against the champion's:
        agreement, per-label divergence, the texts where they differ most, latency, accuracy on
        labels, and whether the gate's shadow requirement allows approval ('emotion-ops shadow')."""
        name, requirement = self.settings.model_name, self.settings.shadow_requirement()
        view = await self._console_read(
            lambda: console.shadow_view(self._versions(), self.store.shadow, name, requirement)
        )
        return {**view, "share": self.settings.shadow_share}

    @web.get("/console/api/labels")
    async def console_labels(
        self,
        status: Annotated[ReviewStatus, Query()] = "quarantined",
        source: Annotated[str | None, Query(max_length=200)] = None,
        reason: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict:
        """Feedback labels in one state (the quarantine by default) with reasons, filtered by
        source and reason, and each source's counts and agreement with the champion."""
        name, hour_ago = self.settings.model_name, datetime.now(UTC) - timedelta(hours=1)

        def gather() -> dict:
            volume = self.store.predictions.volume_by_source(hour_ago)
            return console.label_view(
                self.store.predictions.feedback_rows(name), status, source, reason, volume
            )

        return await self._console_read(gather)

    @web.post("/console/api/labels/review")
    async def console_settle_labels(self, body: LabelDecision) -> dict:
        """Release (they may train) or drop (never) quarantined labels (admin; 'label review')."""
        name = self.settings.model_name
        ids = list(dict.fromkeys(body.ids))
        release, drop = (ids, []) if body.action == "release" else ([], ids)
        review = await self._console_read(
            lambda: review_labels(
                self.store.predictions, name, f"key:{key_name()}", QUARANTINED, release=release, drop=drop
            )
        )
        return {"settled": dict(review.settled)}

    async def _console_read(self, work):
        """Run a console query or action off the event loop; what a user can fix is a 4xx."""
        try:
            return await asyncio.to_thread(work)
        except (ReportNotFound, LabelNotListed) as error:
            raise HTTPException(404, str(error)) from None
        except (RegistryError, ShadowShortfall) as error:
            raise HTTPException(409, str(error)) from None
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        except Exception as error:
            raise _store_unavailable("store or registry", error) from None

    def _versions(self) -> list[dict]:
        if not self._schema_ready:
            self.store.create_schema()
            self._schema_ready = True
        return version_rows(connect(self.settings), self.settings.model_name)

    @web.get("/ui", response_class=HTMLResponse)
    async def ui(self) -> HTMLResponse:
        """A page to try the classifier by hand."""
        return HTMLResponse(UI_PAGE)

    # Before BentoML's own "/" and "/docs.json" (mounted routes match first): its page embeds a
    # tag manager, and its document misses statuses and error bodies (service.openapi).
    @web.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def docs_page(self) -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE, headers={"content-security-policy": DOCS_POLICY})

    @web.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs_page_at_docs(self) -> HTMLResponse:
        """The same page where FastAPI users look for it."""
        return HTMLResponse(DOCS_PAGE, headers={"content-security-policy": DOCS_POLICY})

    @web.get("/docs/init.js", include_in_schema=False)
    async def docs_script(self) -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    @web.get("/docs.json", include_in_schema=False)
    async def docs_document(self) -> JSONResponse:
        """The exact OpenAPI document, with the served model's labels (rebuilt on a swap)."""
        labels = tuple(self.holder.current.labels)
        if self._document is None or self._document[0] != labels:
            generated = EmotionService.openapi_spec.asdict()  # type: ignore[attr-defined]
            document = exact_document(
                generated,
                list(labels),
                api_key=bool(self.settings.named_api_keys()),
                max_labels=self.holder.current.feedback_rule.max_labels,
            )
            self._document = (labels, document)
        return JSONResponse(self._document[1])


EmotionService.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    api_keys=SETTINGS.keys_with_roles(),
    max_body_bytes=SETTINGS.body_limit_bytes,
    watch_disconnects="disconnect-watch" not in SETTINGS.request_path_ablation,
)
bound_endpoint_labels()
