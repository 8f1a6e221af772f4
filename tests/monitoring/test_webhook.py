"""The retrain webhook: retries with backoff, gives up with a line that names no URL."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from monitoring.webhook import WebhookFailed, post_webhook


def test_webhook_retries_then_gives_up_without_naming_its_url():
    answers = [503, 503, 202]
    seen = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.path)
            self.send_response(answers.pop(0) if answers else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"
    try:
        line = post_webhook(url, {"event": "x"}, attempts=3, backoff_seconds=0.01)
        assert line == "webhook answered 202 (attempt 3 of 3)" and "s3cret" not in line
        with pytest.raises(WebhookFailed) as failed:
            post_webhook(url, {"event": "x"}, attempts=2, backoff_seconds=0.01)
        assert "after 2 attempt(s): answered 500" in str(failed.value)
        assert "s3cret" not in str(failed.value) and len(seen) == 5
    finally:
        server.shutdown()
