"""In-process dynamic batching: concurrent requests' texts share one forward pass, with no
network hop between the API and the model.

Greedy, as in Triton's and TorchServe's dynamic batchers: one worker thread runs forwards one
at a time; whatever requests queued up while the last forward ran go into the next one (up to
``max_batch`` texts). An idle model starts at once, so a lone request waits for nothing; under
load, batches grow by themselves. ``max_wait_ms`` optionally holds a batch open a little longer.

Bounded: past ``max_queued_texts`` waiting texts a request is refused at once (``Overloaded``,
a 503 with Retry-After) instead of waiting longer than any client will. A request whose caller
went away (its future is cancelled) is dropped from the queue, never computed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Result = TypeVar("Result")
# One request waiting: its texts, and the future its caller awaits.
Request = tuple[list[str], "asyncio.Future[list[Result]]"]


class Overloaded(RuntimeError):
    """The model's queue is full; the client should retry later."""


class MicroBatcher(Generic[Result]):
    """Batches concurrent ``submit`` calls into ``run_batch`` calls, one text's result each."""

    def __init__(
        self,
        run_batch: Callable[[list[str]], list[Result]],
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        max_queued_texts: int = 2048,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self.on_batch = on_batch or (lambda size: None)
        self.queued_texts = 0
        self._counted: dict[asyncio.Future[list[Result]], int] = {}
        self.computed_texts = 0
        self._queue: asyncio.Queue[Request[Result]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        # One thread: forwards never overlap (torch already spreads one over the cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def submit(self, texts: list[str]) -> list[Result]:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self.queued_texts = 0
            self._counted.clear()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        if self.queued_texts + len(texts) > self.max_queued_texts:
            raise Overloaded(
                f"the model has {self.queued_texts} texts queued (limit {self.max_queued_texts}); "
                "retry shortly"
            )
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self.queued_texts += len(texts)
        self._counted[future] = len(texts)
        # A caller that goes away frees its place in the queue at once, not when it is dequeued.
        future.add_done_callback(self._release)
        self._queue.put_nowait((texts, future))
        return await future

    def _release(self, future: asyncio.Future[list[Result]]) -> None:
        """Take a request's texts off the queue count, once (on dequeue or on cancel)."""
        self.queued_texts -= self._counted.pop(future, 0)

    def _take(self, item: Request[Result]) -> bool:
        """Account for a dequeued request; False when its caller is gone (skip it)."""
        self._release(item[1])
        return not item[1].done()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        carried: Request[Result] | None = None  # a request too big to join the last batch leads the next one
        while True:
            first = carried
            carried = None
            if first is None:
                first = await self._queue.get()
                if not self._take(first):
                    continue
            batch = [first]
            size = len(first[0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if loop.time() >= deadline:
                        break
                    await asyncio.sleep(0.001)
                    continue
                if not self._take(item):
                    continue
                if size + len(item[0]) > self.max_batch:
                    carried = item
                    break
                batch.append(item)
                size += len(item[0])
            batch = [item for item in batch if not item[1].done()]  # cancelled while gathering
            if not batch:
                continue
            texts = [text for item_texts, _ in batch for text in item_texts]
            self.computed_texts += len(texts)
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, texts)
            except Exception as error:  # every caller of this batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.on_batch(len(texts))
            start = 0
            for item_texts, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(item_texts)])
                start += len(item_texts)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
