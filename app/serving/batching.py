"""Batching of scoring across requests: the requests handed over together share one forward pass per model.

A request for one user costs a forward pass whose price is mostly per-operation overhead (kernel
launches on a GPU, dispatch on a CPU): the hybrid scores one user in about 2.5-5 ms and 256 users in
16-130 ms on a CPU, 3.4 ms and 4.7 ms on an H100 (BENCHMARKS.md). So each request is written as a
generator ("steps") that yields what it needs scored, ``(kind, model, request)``, and is sent the
result; ``drive`` runs many such requests together. It advances every one to its next need, scores the
needs of each (kind, model) in one call, sends each its own result, and repeats until all are done,
so a request whose fallback chain needs a second model simply yields again.

Which requests are handed over together is the caller's choice: the API hands over those that queued
on its event loop while the previous batch was computed, so one request alone never waits for company.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# What a request asks for: (kind of scoring, the model, that kind's request for one user or sequence).
Need = tuple[str, Any, Any]
Steps = Generator[Need, Any, T]
# kind -> fn(model, [request, ...]) -> [result, ...] in the same order
Scorers = dict[str, Callable[[Any, Sequence[Any]], Sequence[Any]]]


def drive(
    steps: Sequence[Steps[Any]],
    scorers: Scorers,
    max_batch: int,
    observe: Callable[[Any, int], None] | None = None,
) -> list[Any]:
    """Each request's return value, or the exception it raised, in order.

    The needs of one (kind, model) are scored in calls of at most ``max_batch`` requests; ``observe(model,
    n)``, when given, is told each call's size. When a call for several raises, each of its requests is
    scored alone, so a request that breaks the pass fails only itself: its own error is thrown into its
    generator, which may handle it as it would the error of a request scored alone.
    """
    results: list[Any] = [None] * len(steps)
    waiting: dict[tuple[str, int], tuple[Any, list[tuple[int, Any]]]] = {}

    def advance(i: int, send: Any = None, error: BaseException | None = None) -> None:
        try:
            kind, model, request = steps[i].throw(error) if error is not None else steps[i].send(send)
        except StopIteration as done:
            results[i] = done.value
            return
        except Exception as e:  # the request's own failure (bad input, not ready...): its result
            results[i] = e
            return
        waiting.setdefault((kind, id(model)), (model, []))[1].append((i, request))

    def attempt(kind: str, model: Any, chunk: list[tuple[int, Any]]) -> Exception | None:
        """One call for ``chunk``; on success each request is sent its result, else the error is returned."""
        try:
            out = scorers[kind](model, [request for _, request in chunk])
            if len(out) != len(chunk):
                raise RuntimeError(f"{kind} scorer returned {len(out)} results for {len(chunk)} requests")
        except Exception as e:
            return e
        if observe is not None:
            observe(model, len(chunk))
        for (i, _), result in zip(chunk, out, strict=True):
            advance(i, result)
        return None

    for i in range(len(steps)):
        advance(i)
    size = max(1, max_batch)
    while waiting:
        groups = list(waiting.items())
        waiting.clear()
        for (kind, _), (model, asked) in groups:
            for start in range(0, len(asked), size):
                chunk = asked[start : start + size]
                error = attempt(kind, model, chunk)
                if error is None:
                    continue
                if len(chunk) == 1:
                    advance(chunk[0][0], error=error)
                    continue
                for one in chunk:  # the joint call failed: each alone
                    error = attempt(kind, model, [one])
                    if error is not None:
                        advance(one[0], error=error)
    return results


def unwrap(result: T | BaseException) -> T:
    """A request's result from ``drive``: the value, or its error raised."""
    if isinstance(result, BaseException):
        raise result
    return result


def run_alone(steps: Steps[T], scorers: Scorers, observe: Callable[[Any, int], None] | None = None) -> T:
    """One request's steps on their own (a batch of one): its return value, or its exception raised."""
    return unwrap(drive([steps], scorers, 1, observe)[0])
