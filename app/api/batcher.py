"""Requests waiting on the event loop for a serving thread are handed to it together.

An API process computes at most DEEPREC_SERVING_CONCURRENCY requests at once; the others wait on its
event loop. Rather than one thread hop per request, each free lane takes every request queued so far
(at most DEEPREC_SCORE_BATCH_SIZE) in one hop, and the service runs them with shared forward passes
(``app.serving.batching``). A request that finds a lane free starts at once, alone: nobody waits for
company, and under load the batches grow by themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

from app.serving.batching import Steps, unwrap
from app.serving.metrics import SERVING_HOP

T = TypeVar("T")


class RequestBatcher:
    """``await batcher.submit(make)``: the result of the steps ``make()`` builds (its error raised), run in a
    worker thread under ``limiter`` together with the other requests queued meanwhile."""

    def __init__(
        self,
        run_many: Callable[[Sequence[Steps[Any]]], list[Any]],
        limiter: anyio.CapacityLimiter,
        max_batch: int,
    ) -> None:
        self.run_many = run_many
        self.limiter = limiter
        self.max_batch = max(1, int(max_batch))
        self._queue: list[tuple[Callable[[], Steps[Any]], asyncio.Future[Any]]] = []
        self._lanes = 0  # requests alone and drain tasks running, at most the limiter's tokens
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, make: Callable[[], Steps[T]]) -> T:
        if not self._queue and self._lanes < self.limiter.total_tokens:
            return await self._alone(make)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((make, future))
        self._start_drain()
        return await future

    async def _alone(self, make: Callable[[], Steps[T]]) -> T:
        """A lane is free and nobody waits: this request goes at once, from its own coroutine."""
        self._lanes += 1
        try:
            SERVING_HOP.observe(1)
            result = (await anyio.to_thread.run_sync(self._run, [make], limiter=self.limiter))[0]
        finally:
            self._lanes -= 1
            self._start_drain()  # for the requests that queued meanwhile
        return unwrap(result)

    def _start_drain(self) -> None:
        if self._queue and self._lanes < self.limiter.total_tokens:
            self._lanes += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)  # a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: len(batch)]
                pending = [(make, future) for make, future in batch if not future.done()]  # done: client gone
                if not pending:
                    continue
                SERVING_HOP.observe(len(pending))
                try:
                    results = await anyio.to_thread.run_sync(self._run, [m for m, _ in pending], limiter=self.limiter)
                except BaseException as e:  # the drain itself was cancelled (shutdown) or broke
                    for _, future in pending:
                        if not future.done():
                            future.set_exception(e if isinstance(e, Exception) else RuntimeError("serving stopped"))
                    raise
                for (_, future), result in zip(pending, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._lanes -= 1

    def _run(self, makes: list[Callable[[], Steps[Any]]]) -> list[Any]:
        return self.run_many([make() for make in makes])
