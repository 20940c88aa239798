"""Admission: how many scoring requests, and how much request memory, a process takes at once.

Two limits, each answered with 503 and ``Retry-After`` rather than queueing or growing:

- **concurrency**: at most ``max_concurrent`` scoring requests (``/invocations``, ``infer``)
  in flight per process. Health checks, metadata and metrics are never counted, so a
  flood of scoring requests cannot make the load balancer think the task is dead.
- **memory**: a request costs about :data:`CSV_COST` (CSV) or :data:`JSON_COST` (any JSON
  form) bytes of memory per byte of body while it is decoded and scored (the largest
  figures measured in ``bench/memory.md``, rounded up). Its cost is
  reserved before the body is read (from ``Content-Length``, or chunk by chunk when the
  body is chunked) and released when the answer is sent; a request whose cost would take
  the total past ``budget_bytes`` is refused. The budget comes from the task's memory
  (the stacks set ``DSC_MEMORY_BUDGET_BYTES``), so eight maximum-size bodies at once get
  some 503s instead of an OOM kill of the task and every request in it.

One request is always admitted when none is in flight, whatever its cost: a budget that
could never take the largest allowed body is refused at start-up instead
(:func:`check_budget`).

Everything here runs on the event loop's thread, so the counters need no lock.
"""

from __future__ import annotations

import math
from types import TracebackType

from dscloud.errors import ConfigError, OverloadedError

__all__ = ["CSV_COST", "JSON_COST", "MAX_COST", "Admission", "Ticket", "check_budget"]

#: Peak server memory per byte of body while a request is decoded and scored
#: (bench/memory.md, run "vector": the largest ratio measured for the media type plus about
#: 15 %: CSV 12.9x; JSON 12.6x for dataframe_split, 11.5x inputs and OIP, 7.4x
#: dataframe_records and instances). The JSON peak is orjson's parse of the whole document;
#: decoded columns are held as arrays from then on (``Schema.compact``).
CSV_COST = 15.0
JSON_COST = 14.0
MAX_COST = max(CSV_COST, JSON_COST)


class Ticket:
    """One admitted request's reservation; grows as its body arrives. Used as the ``with``
    block of :meth:`Admission.request`, whose end releases it (a plain class: a generator
    context manager costs a visible share of a one-row request)."""

    def __init__(self, admission: Admission, cost_per_body_byte: float) -> None:
        self._admission = admission
        self.cost_per_body_byte = cost_per_body_byte
        self.reserved = 0

    def reserve(self, body_bytes: int) -> None:
        """Reserve the memory of ``body_bytes`` more body bytes.

        Raises :class:`OverloadedError` when that would pass the budget while other
        requests are in flight.
        """
        cost = math.ceil(body_bytes * self.cost_per_body_byte)
        self._admission._take(self, cost)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        admission = self._admission
        admission.in_flight -= 1
        admission.reserved -= self.reserved


class Admission:
    """The limits of one server process (see the module docstring)."""

    def __init__(self, *, max_concurrent: int, budget_bytes: int) -> None:
        self.max_concurrent = max_concurrent
        self.budget_bytes = budget_bytes
        self.in_flight = 0
        self.reserved = 0

    def request(self, cost_per_body_byte: float = MAX_COST) -> Ticket:
        """Admit one scoring request: its :class:`Ticket`, to use as a ``with`` block whose
        end releases it; its body will cost ``cost_per_body_byte`` bytes of memory per byte.

        Raises :class:`OverloadedError` when ``max_concurrent`` requests are in flight.
        """
        if self.max_concurrent and self.in_flight >= self.max_concurrent:
            raise OverloadedError(
                f"{self.in_flight} scoring requests in flight, the most this process takes "
                "at once (DSC_MAX_CONCURRENT); retry shortly"
            )
        self.in_flight += 1
        return Ticket(self, cost_per_body_byte)

    def _take(self, ticket: Ticket, cost: int) -> None:
        alone = self.in_flight == 1 and ticket.reserved == self.reserved
        if self.budget_bytes and not alone and self.reserved + cost > self.budget_bytes:
            raise OverloadedError(
                f"the requests in flight already use the memory budget of this process "
                f"({self.budget_bytes} bytes, DSC_MEMORY_BUDGET_BYTES); retry shortly"
            )
        ticket.reserved += cost
        self.reserved += cost


def check_budget(budget_bytes: int, max_body_bytes: int) -> None:
    """Raise :class:`ConfigError` when a budget could not take one largest body alone."""
    need = math.ceil(max_body_bytes * MAX_COST)
    if budget_bytes and budget_bytes < need:
        raise ConfigError(
            f"memory budget {budget_bytes} bytes (DSC_MEMORY_BUDGET_BYTES) cannot take one "
            f"body of the largest allowed size, {max_body_bytes} bytes (DSC_MAX_BODY_BYTES), "
            f"which needs about {need} bytes: raise the budget or lower the body limit"
        )
