"""Overlap reading, scoring and writing: one thread each, a couple of chunks in flight.

Parquet decoding, ONNX Runtime and Parquet encoding all release the GIL, so a shard whose
reader prefetches the next chunk while the scorer runs and the writer encodes the last
one finishes in about the time of its slowest stage instead of the sum of all three.
At most ``depth`` chunks wait on each side, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Stage", "prefetch"]

T = TypeVar("T")
_END: Any = object()


def prefetch(source: Iterator[T], pool: ThreadPoolExecutor, *, depth: int = 2) -> Iterator[T]:
    """Items of ``source``, produced on ``pool`` (one thread) up to ``depth`` ahead.

    An exception raised by ``source`` is raised here, at the item where it happened.
    """
    pending: deque[Future[Any]] = deque(pool.submit(next, source, _END) for _ in range(depth))
    while pending:
        item = pending.popleft().result()
        if item is _END:
            return
        pending.append(pool.submit(next, source, _END))
        yield item


class Stage:
    """Runs calls in order on ``pool`` (one thread), at most ``depth`` queued.

    :meth:`submit` and :meth:`drain` re-raise the first error of an earlier call.
    """

    def __init__(self, pool: ThreadPoolExecutor, *, depth: int = 2) -> None:
        self.pool = pool
        self.depth = depth
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(self.pool.submit(fn, *args))

    def drain(self) -> None:
        """Wait for every queued call; raises the first error among them."""
        while self._pending:
            self._pending.popleft().result()
