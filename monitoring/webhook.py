"""The retrain webhook: the trigger's decision POSTed to an external CI or orchestrator (which
can run ``emotion-ops retrain``), with a timeout and retries."""

from __future__ import annotations

import time

import httpx


class WebhookFailed(RuntimeError):
    """The retrain webhook did not answer 2xx after every attempt."""


def post_webhook(
    url: str,
    payload: dict,
    token: str | None = None,
    timeout: float = 10.0,
    attempts: int = 3,
    backoff_seconds: float = 2.0,
) -> str:
    """POST the decision, retrying failures with backoff; returns a line for the report.

    The line names no URL: the report is served by ``/reports``, and a webhook URL often holds
    a token. Raises ``WebhookFailed`` when no attempt got a 2xx answer.
    """
    headers = {"authorization": f"Bearer {token}"} if token else {}
    last = "no attempt"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
            if response.is_success:
                return f"webhook answered {response.status_code} (attempt {attempt} of {attempts})"
            last = f"answered {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this request; sending it again changes nothing
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}"
        if attempt < attempts:
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
    raise WebhookFailed(f"retrain webhook failed after {attempt} attempt(s): {last}")
