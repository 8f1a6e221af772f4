"""In-process dynamic batching: concurrent requests' texts share one forward pass, with no
network hop between the API and the model.

Greedy, as in Triton's and TorchServe's dynamic batchers: one worker thread runs forwards one
at a time; whatever requests queued up while the last forward ran go into the next one (up to
``max_batch`` texts). An idle model starts at once, so a lone request waits for nothing; under
load, batches grow by themselves. ``max_wait_ms`` optionally holds a batch open a little longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[str]], list[dict]],
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch or (lambda size: None)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # One thread: forwards never overlap (torch already spreads one over the cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def submit(self, texts: list[str]) -> list[dict]:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((texts, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        carried = None  # a request too big to join the last batch leads the next one
        while True:
            batch = [carried or await self._queue.get()]
            carried = None
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if loop.time() >= deadline:
                        break
                    await asyncio.sleep(0.001)
                    continue
                if size + len(item[0]) > self.max_batch:
                    carried = item
                    break
                batch.append(item)
                size += len(item[0])
            texts = [text for item_texts, _ in batch for text in item_texts]
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
