"""The in-process dynamic batcher: concurrent requests share forwards, every caller gets its own
results in order, batches respect the size cap, and a failed forward fails only its callers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.inference.batching import MicroBatcher


class SlowEcho:
    """A forward that takes a while (like a model) and records the batches it saw."""

    def __init__(self, seconds: float = 0.02, fail_on: str | None = None):
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> list[dict]:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.fail_on in texts:
            raise RuntimeError("forward failed")
        return [{"echo": text} for text in texts]


def test_concurrent_requests_share_forwards_and_get_their_own_results():
    model = SlowEcho()
    batcher = MicroBatcher(model, max_batch=8)

    async def main():
        requests = [[f"r{i}-a", f"r{i}-b"] if i % 3 == 0 else [f"r{i}"] for i in range(20)]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        return requests, answers

    requests, answers = asyncio.run(main())
    batcher.close()
    for texts, answer in zip(requests, answers, strict=True):
        assert [item["echo"] for item in answer] == texts
    assert sum(len(batch) for batch in model.batches) == sum(len(texts) for texts in requests)
    assert len(model.batches) < len(requests)  # requests were merged
    assert max(len(batch) for batch in model.batches) <= 8
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("forward")


@pytest.mark.parametrize(
    ("wait_ms", "expected"), [(0.0, [["alone"], ["later"]]), (500.0, [["alone", "later"]])]
)
def test_a_lone_request_is_not_held_for_company_unless_asked(wait_ms, expected):
    """By default a batch closes as soon as the queue is empty; max_wait_ms holds it open."""
    model = SlowEcho(seconds=0.0)
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=wait_ms)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["alone"]))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, batcher.submit(["later"]))

    asyncio.run(main())
    batcher.close()
    assert model.batches == expected


def test_a_request_larger_than_the_room_left_leads_the_next_batch():
    model = SlowEcho()
    batcher = MicroBatcher(model, max_batch=4)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.005)  # "a" is in the forward; the next three queue up
        rest = [batcher.submit(["b", "c"]), batcher.submit(["d", "e", "f"]), batcher.submit(["g"])]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    batcher.close()
    assert [[item["echo"] for item in answer] for answer in answers] == [
        ["a"],
        ["b", "c"],
        ["d", "e", "f"],
        ["g"],
    ]
    assert model.batches == [["a"], ["b", "c"], ["d", "e", "f", "g"]]


def test_a_failed_forward_fails_its_callers_only():
    model = SlowEcho(fail_on="bad")
    batcher = MicroBatcher(model, max_batch=2)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["ok-1"]))
        await asyncio.sleep(0.005)
        doomed = [batcher.submit(["bad"]), batcher.submit(["ok-2"])]
        later = batcher.submit(["ok-3"])
        return await asyncio.gather(first, *doomed, later, return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    assert results[0] == [{"echo": "ok-1"}]
    assert all(isinstance(result, RuntimeError) for result in results[1:3])
    assert results[3] == [{"echo": "ok-3"}]


@pytest.mark.parametrize("wait_ms", [0.0, 5.0])
def test_batch_size_is_reported(wait_ms):
    sizes = []
    batcher = MicroBatcher(SlowEcho(), max_batch=16, max_wait_ms=wait_ms, on_batch=sizes.append)

    async def main():
        await asyncio.gather(*(batcher.submit([str(i)]) for i in range(10)))

    asyncio.run(main())
    batcher.close()
    assert sum(sizes) == 10


class GatedEcho(SlowEcho):
    """A forward that waits until the test opens the gate: no timing decides the order."""

    def __init__(self):
        super().__init__(seconds=0)
        self.started = threading.Event()
        self.gate = threading.Event()

    def __call__(self, texts):
        self.started.set()
        assert self.gate.wait(10)
        return super().__call__(texts)


def test_a_cancelled_request_is_never_computed_and_frees_its_place_at_once():
    model = GatedEcho()
    batcher = MicroBatcher(model, max_batch=1, max_queued_texts=3)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["busy"]))  # occupies the model
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(batcher.submit(["nobody waits for me"]))
        kept = asyncio.ensure_future(batcher.submit(["wanted"]))
        await asyncio.sleep(0)  # both are queued behind the running forward
        assert batcher.queued_texts == 2
        gone.cancel()  # the client hung up while its request was queued
        await asyncio.sleep(0)
        assert batcher.queued_texts == 1  # its place is free before it is dequeued
        model.gate.set()
        return await first, await kept

    assert asyncio.run(main()) == ([{"echo": "busy"}], [{"echo": "wanted"}])
    assert model.batches == [["busy"], ["wanted"]]
    assert batcher.computed_texts == 2 and batcher.queued_texts == 0


def test_past_the_queue_limit_requests_are_shed_at_once():
    from core.inference.batching import Overloaded

    model = SlowEcho(seconds=0.2)
    batcher = MicroBatcher(model, max_batch=4, max_queued_texts=3)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["a", "b"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="limit 3"):
            await batcher.submit(["c", "d"])  # 2 + 2 queued texts > 3
        return await first

    assert asyncio.run(main()) == [{"echo": "a"}, {"echo": "b"}]
