"""Micro-batching of concurrent scoring requests: one forward pass for the users whose requests arrive
while another pass is running.

A request for one user costs a forward pass whose price is mostly per-operation overhead (kernel
launches on a GPU, dispatch on a CPU): the hybrid scores one user in about 2.5-5 ms and 256 users in
16-130 ms on a CPU, 3.4 ms and 4.7 ms on an H100 (BENCHMARKS.md). ``MicroBatcher`` lets the requests
that queue up behind a running pass share the next one. It never waits for company: a request that
finds no pass running starts one at once with whatever is queued, so one client alone sees no added
latency, and under concurrency the batch grows with the load, up to ``max_batch``.

There is no extra thread: the first waiting request thread that finds the batcher idle computes the
next batch for everyone in it (leader/follower), and the others wait on a condition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("request", "result", "error", "done")

    def __init__(self, request: T) -> None:
        self.request = request
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher(Generic[T, R]):
    """``batcher(request)`` -> ``fn([request, ...])[i]`` for this request, computed together with the
    requests queued at the time (at most ``max_batch``, oldest first).

    ``fn`` maps a list of requests to a list of results of the same length and order. When it raises
    for a batch of several, each request of that batch is retried alone, so one bad request fails only
    itself. ``observe(n)``, when given, is told the size of every batch computed.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.observe = observe
        self._pending: list[_Slot[T, R]] = []
        self._busy = False
        self._cond = threading.Condition()
        self.batches = 0  # passes computed, and the requests they answered
        self.requests = 0

    def __call__(self, request: T) -> R:
        slot: _Slot[T, R] = _Slot(request)
        with self._cond:
            self._pending.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._busy:
                    self._cond.wait()
                if slot.done:
                    break
                self._busy = True  # this thread leads the next pass
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            self._compute(batch)
        except BaseException as e:  # noqa: BLE001 - delivered to the requests that asked
            if len(batch) == 1:
                batch[0].error = e
            else:  # retry each alone, so a request that breaks the pass fails only itself
                for slot in batch:
                    try:
                        self._compute([slot])
                    except BaseException as e1:  # noqa: BLE001
                        slot.error = e1
        finally:
            for slot in batch:
                slot.done = True

    def _compute(self, batch: list[_Slot[T, R]]) -> None:
        results = self.fn([s.request for s in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} requests")
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
        self.batches += 1
        self.requests += len(batch)
        if self.observe is not None:
            self.observe(len(batch))
