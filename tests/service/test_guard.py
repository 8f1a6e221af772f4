"""The guard's disconnect handling, on a real event loop: a client that hangs up cancels its
request (the app never finishes it, nothing is sent), anyone else's cancellation goes on up,
and an app that fails after starting an error response still answers in the one error shape."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.guard import RequestGuard

SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"content-type", b"application/json")],
}


class Client:
    """One connection's side of ASGI: the body once, then (when told) a disconnect."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gone = asyncio.Event()
        self._body_given = False

    async def receive(self) -> dict:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": b'{"text": "hi"}', "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_client_that_hangs_up_cancels_its_request_and_gets_nothing():
    cancelled = asyncio.Event()

    async def waits_forever(scope, receive, send):
        try:
            await asyncio.Event().wait()  # a request queued for the model
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario():
        client = Client()
        request = asyncio.ensure_future(RequestGuard(waits_forever)(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.01)
        assert not request.done()
        client.gone.set()
        assert await asyncio.wait_for(request, 2) is None  # ended quietly, not as an error
        assert cancelled.is_set() and client.sent == []
        assert not request.cancelled()

    run(scenario())


def test_an_answered_request_is_sent_and_its_watcher_stops():
    async def answers(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario():
        client = Client()
        before = len(asyncio.all_tasks())
        await RequestGuard(answers)(SCOPE, client.receive, client.send)
        await asyncio.sleep(0)  # the watcher's cancellation runs
        assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
        assert len(asyncio.all_tasks()) == before  # no task left behind

    run(scenario())


@pytest.mark.parametrize("client_hangs_up_too", [False, True])
def test_someone_elses_cancellation_goes_on_up(client_hangs_up_too):
    async def waits_forever(scope, receive, send):
        await asyncio.Event().wait()

    async def scenario():
        client = Client()
        request = asyncio.ensure_future(RequestGuard(waits_forever)(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.01)
        if client_hangs_up_too:
            client.gone.set()  # at the same moment: two cancels, only one of them ours
        request.cancel()  # BentoML's timeout, or shutdown
        with pytest.raises(asyncio.CancelledError):
            await request

    run(scenario())


def test_an_app_that_fails_after_starting_an_error_answers_in_the_error_shape():
    async def fails(scope, receive, send):
        await send({"type": "http.response.start", "status": 400, "headers": []})
        raise RuntimeError("boom")

    async def scenario():
        client = Client()
        with pytest.raises(RuntimeError):
            await RequestGuard(fails)(SCOPE, client.receive, client.send)
        start, body = client.sent
        assert start["status"] == 500
        assert json.loads(body["body"]) == {"error": "internal error; see the server log"}

    run(scenario())


@pytest.mark.parametrize("watch", [True, False])
def test_without_the_watcher_a_request_is_answered_the_same(watch):
    async def answers(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario():
        client = Client()
        await RequestGuard(answers, watch_disconnects=watch)(SCOPE, client.receive, client.send)
        assert [m.get("status") for m in client.sent] == [200, None]

    run(scenario())


class ServerThatEndsAfterTheResponse(Client):
    """Like uvicorn: once the response is complete, receive() says 'disconnect'."""

    async def send(self, message: dict) -> None:
        await super().send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.gone.set()


def test_work_after_the_last_byte_is_not_cancelled_by_the_connection_ending():
    finished = asyncio.Event()

    async def answers_then_logs(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        await asyncio.sleep(0.02)  # the store's write, the metrics: after the client has its answer
        finished.set()

    async def scenario():
        client = ServerThatEndsAfterTheResponse()
        await RequestGuard(answers_then_logs)(SCOPE, client.receive, client.send)
        assert finished.is_set()
        assert [m.get("status") for m in client.sent] == [200, None]

    run(scenario())


async def _waits_forever(scope, receive, send):
    await asyncio.Event().wait()


async def _swallows_the_cancel(scope, receive, send):
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return None  # some apps end quietly on a cancel


@pytest.mark.parametrize("app", [_waits_forever, _swallows_the_cancel])
def test_after_a_hang_up_the_task_carries_no_pending_cancellation(app):
    async def request_then_more_work(client):
        assert await RequestGuard(app)(SCOPE, client.receive, client.send) is None
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.01)  # would raise CancelledError if a cancel were still pending
        return "went on"

    async def scenario():
        client = Client()
        request = asyncio.ensure_future(request_then_more_work(client))
        await asyncio.sleep(0.01)
        client.gone.set()
        assert await asyncio.wait_for(request, 2) == "went on"

    run(scenario())


def test_a_path_sent_response_is_answered_too():
    finished = asyncio.Event()

    async def sends_a_file(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/dev/null"})
        await asyncio.sleep(0.02)
        finished.set()

    class EndsAfterPathsend(Client):
        async def send(self, message: dict) -> None:
            await super().send(message)
            if message["type"] == "http.response.pathsend":
                self.gone.set()

    async def scenario():
        client = EndsAfterPathsend()
        await RequestGuard(sends_a_file)(SCOPE, client.receive, client.send)
        assert finished.is_set()

    run(scenario())
