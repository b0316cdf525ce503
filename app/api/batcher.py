"""Requests waiting on the event loop for a serving thread are handed to it together.

An API process computes at most DEEPREC_SERVING_CONCURRENCY requests at once; the others wait on its
event loop. Rather than one thread hop per request, each free lane takes every request queued so far
(at most DEEPREC_SCORE_BATCH_SIZE) in one hop, and the service runs them with shared forward passes
(``app.serving.batching``). A request that finds a lane free starts at once, alone: nobody waits for
company, and under load the batches grow by themselves.

Background work (``submit_background``: the score refresher's) runs in the same lanes, never ahead of
a request and never in a request's hop: a hop takes the queued requests, or, when none is queued,
``background_per_hop`` pieces of background work. A request that arrives meanwhile waits for that one
piece (one user's forward passes), not for a batch of them: sharing a hop with background work made
requests wait for it (measured on ML-100K under writes: a request's hop took 1.9 ms of CPU alone and
7-18 ms with four refreshes in it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
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
        background_per_hop: int = 1,
    ) -> None:
        self.run_many = run_many
        self.limiter = limiter
        self.max_batch = max(1, int(max_batch))
        self.background_per_hop = max(1, int(background_per_hop))
        self._queue: list[tuple[Callable[[], Steps[Any]], asyncio.Future[Any]]] = []
        self._background: list[tuple[Callable[[], Steps[Any]], asyncio.Future[Any]]] = []
        self._lanes = 0  # requests alone and drain tasks running, at most the limiter's tokens
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, make: Callable[[], Steps[T]]) -> T:
        if not self._queue and self._lanes < self.limiter.total_tokens:
            return await self._alone(make)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((make, future))
        self._start_drain()
        return await future

    async def submit_background(self, makes: Sequence[Callable[[], Steps[Any]]]) -> list[Any]:
        """Each one's result or error, in order: run in the lanes in hops of their own, when no request waits."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in makes]
        self._background.extend(zip(makes, futures, strict=True))
        self._start_drain()
        return list(await asyncio.gather(*futures, return_exceptions=True))

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
        if (self._queue or self._background) and self._lanes < self.limiter.total_tokens:
            self._lanes += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)  # a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue or self._background:
                batch = self._queue[: self.max_batch]
                del self._queue[: len(batch)]
                extra = [] if batch else self._background[: self.background_per_hop]
                del self._background[: len(extra)]
                requests = sum(not future.done() for _, future in batch)  # done: the client went away
                pending = [(make, future) for make, future in batch + extra if not future.done()]
                if not pending:
                    continue
                if requests:
                    SERVING_HOP.observe(requests)
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


def serving_lanes(state: Any) -> tuple[anyio.CapacityLimiter, RequestBatcher]:
    """The running event loop's limiter of serving threads and its batcher, one of each per loop, kept on
    ``state`` (the app's): DEEPREC_SERVING_CONCURRENCY lanes, DEEPREC_SCORE_BATCH_SIZE requests a hop."""
    loop = asyncio.get_running_loop()
    held = getattr(state, "serving_limiter", None)
    if held is None or held[0] is not loop:
        limiter = anyio.CapacityLimiter(state.settings.serving_concurrency)
        run_many = lambda steps: state.recommender.run_many(steps)  # noqa: E731 - the service of the moment
        batcher = RequestBatcher(run_many, limiter, state.settings.score_batch_size)
        held = state.serving_limiter = (loop, limiter, batcher)
    return held[1], held[2]


def background_submitter(
    batcher: RequestBatcher, loop: asyncio.AbstractEventLoop, stopping: threading.Event
) -> Callable[[Sequence[Callable[[], Steps[Any]]]], list[Any]]:
    """For a thread other than the loop's: ``submit(makes)`` runs them as ``batcher``'s background work and
    waits for their results; once ``stopping`` is set it stops waiting (each result is then an error), so a
    shutdown that joins the thread from the loop's own thread cannot wait on the loop."""

    def submit(makes: Sequence[Callable[[], Steps[Any]]]) -> list[Any]:
        future = asyncio.run_coroutine_threadsafe(batcher.submit_background(makes), loop)
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if stopping.is_set() or loop.is_closed():
                    future.cancel()
                    return [RuntimeError("serving stopped")] * len(makes)

    return submit
