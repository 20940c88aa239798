"""How long a client may take: to send its headers, its body, and between requests.

uvicorn bounds only the idle time between two requests on a kept-alive connection
(``timeout_keep_alive``). A connection that opens and then sends nothing, or sends its
headers one byte a minute, is held forever: a thousand of them exhaust the file
descriptors and the load balancer's health checks start failing. So:

- **headers** must be complete within ``header_seconds`` of the connection opening, or of
  the first byte of the next request on a kept-alive connection; otherwise the connection
  is closed (:class:`HeaderDeadlineProtocol` extends uvicorn's HTTP protocol);
- **the body** must be complete within ``body_seconds`` of the headers; otherwise the
  request is answered 408 (:class:`~dscloud.server.app.ModelServer` reads it, and
  :class:`BodyDeadlines` keeps the time);
- **between requests** a connection may idle for :data:`KEEP_ALIVE_SECONDS`, *longer* than
  the ALB's 60 s idle timeout. AWS's guidance for targets: the load balancer must be the
  one to close an idle connection; a target that closes first races the balancer, which
  may send a request on a connection the target has just closed, and the client gets a
  502. (A header deadline, in contrast, only ever closes a connection that has started
  a request and stalled.)

The scoring concurrency cap and the memory budget are in :mod:`dscloud.server.admission`.
The same protocol subclass also writes each answer in one piece (:class:`CoalescedWrites`).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "KEEP_ALIVE_SECONDS",
    "PROTOCOL",
    "BodyDeadlines",
    "CoalescedWrites",
    "HeaderDeadlineProtocol",
    "deadline_protocol",
]

#: Longer than an ALB's 60 s idle timeout, so the balancer never reuses a closed connection.
KEEP_ALIVE_SECONDS = 75


def _base() -> type[Any]:
    """uvicorn's fastest HTTP/1.1 protocol here: httptools when installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional in uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


class CoalescedWrites:
    """A connection's transport whose writes of one event-loop turn go out as one.

    uvicorn writes an answer's status line and headers, then its body, with two
    ``write`` calls: two syscalls, and two wake-ups of the client for one small answer.
    Here the writes made before the loop's next turn are joined and written once (one
    ``call_soon`` per answer); :meth:`close` writes what waits first. Measured on 1-row
    requests: about a fifth less CPU per request (``bench/serve.md``). Everything else is
    the real transport's.
    """

    __slots__ = ("_loop", "_transport", "_waiting")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._waiting: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._waiting:
            self._loop.call_soon(self._flush)
        self._waiting.append(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def _flush(self) -> None:
        if self._waiting:
            data = b"".join(self._waiting)
            self._waiting.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderDeadlineProtocol(_base()):  # type: ignore[misc]
    """uvicorn's protocol, closing a connection whose request headers are late, and
    writing each answer in one piece (:class:`CoalescedWrites`).

    ``header_seconds`` is set once per process by :func:`deadline_protocol` (0 disables).
    """

    header_seconds: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Set after uvicorn's own setup: its flow control keeps the real transport.
        self.transport = CoalescedWrites(transport, self.loop)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        waiting = before is None or before.response_complete
        super().data_received(data)
        if self.cycle is not before:  # the headers are complete: a new request began
            self._disarm()
        elif waiting and self._header_timer is None:
            # The first bytes of the next request on a kept-alive connection, its headers
            # still incomplete. Armed only now: headers that come whole in one read (nearly
            # every request) cost no timer.
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.header_seconds > 0:
            self._header_timer = self.loop.call_later(self.header_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()


class BodyDeadlines:
    """The ``seconds`` deadline of every request reading its body, kept by one timer.

    ``asyncio.timeout`` arms and cancels an event-loop timer per request, which costs more
    than the rest of reading a one-row body (profiled: ``bench/serve.md``). Here a
    request only notes when its body is due (:meth:`start`, :meth:`stop`); one timer per
    process, running only while bodies are being read, wakes every ``seconds / 4`` and
    cancels the reads that are late, so a late body is refused between ``seconds`` and
    ``1.25 * seconds`` after its headers. Event-loop thread only.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[asyncio.Task[Any], float] = {}
        self._late: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> asyncio.Task[Any]:
        """Note that the current task is reading a body due in ``seconds``; returns the task
        for :meth:`stop` and :meth:`late`."""
        task = asyncio.current_task()
        assert task is not None, "a body is read by a task"
        loop = task.get_loop()
        self._due[task] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_later(self.seconds / 4, self._sweep)
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        """The body of ``task`` arrived, or its reading ended otherwise."""
        self._due.pop(task, None)

    def late(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by this deadline (call on its CancelledError):
        True uncancels it, so the request can still be answered 408."""
        if task not in self._late:
            return False
        self._late.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        self._timer = None
        if not self._due:
            return
        loop = next(iter(self._due)).get_loop()
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._late.add(task)
                task.cancel()
        if self._due:
            self._timer = loop.call_later(self.seconds / 4, self._sweep)


#: Import string of the protocol, for uvicorn's worker processes.
PROTOCOL = f"{__name__}:HeaderDeadlineProtocol"


def deadline_protocol(header_seconds: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``, with this process's header deadline."""
    HeaderDeadlineProtocol.header_seconds = header_seconds
    return HeaderDeadlineProtocol
