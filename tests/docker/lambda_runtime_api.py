"""A minimal Lambda Runtime API (2018-06-01) on 127.0.0.1, for running a function image here.

No Runtime Interface Emulator is available on these machines, so this serves what the
runtime interface client in the image (``awslambdaric``) talks to, as Lambda does:

- ``GET  /2018-06-01/runtime/invocation/next`` blocks until an event is queued, then answers
  it with the headers Lambda sends: ``Lambda-Runtime-Aws-Request-Id``,
  ``Lambda-Runtime-Deadline-Ms``, ``Lambda-Runtime-Invoked-Function-Arn`` and
  ``Lambda-Runtime-Trace-Id``;
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``/{id}/error`` take the
  function's answer (202 Accepted);
- ``POST /2018-06-01/runtime/init/error`` takes a failure to start.

:meth:`RuntimeApi.invoke` queues an event and returns what the function answered.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FUNCTION_ARN", "Answer", "RuntimeApi"]

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:dsc-scorer"
_ANSWER = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")


@dataclass(frozen=True)
class Answer:
    """What the function posted for one invocation: ``kind`` is response or error."""

    kind: str
    body: Any
    headers: dict[str, str]


class RuntimeApi:
    """The Runtime API on ``127.0.0.1:port``; ``address`` is ``AWS_LAMBDA_RUNTIME_API``."""

    def __init__(self, *, timeout_seconds: float = 60.0) -> None:
        self.timeout_seconds = timeout_seconds
        self._events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._answers: dict[str, queue.Queue[Answer]] = {}
        self.init_errors: list[Any] = []
        self.next_headers: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def invoke(self, event: Any, *, wait_seconds: float = 120.0) -> Answer:
        """Queue ``event`` for the function and return its answer; raises TimeoutError."""
        request_id = str(uuid.uuid4())
        self._answers[request_id] = queue.Queue()
        self._events.put((request_id, json.dumps(event).encode()))
        try:
            return self._answers[request_id].get(timeout=wait_seconds)
        except queue.Empty:
            raise TimeoutError(f"no answer to {request_id} in {wait_seconds} s") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self) -> None:
                if self.path != "/2018-06-01/runtime/invocation/next":
                    self._reply(404, b'{"errorType": "NotFound"}', {})
                    return
                request_id, event = api._events.get()  # long poll, as Lambda's does
                deadline_ms = int((time.time() + api.timeout_seconds) * 1000)
                trace = (
                    f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                    f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
                )
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": trace,
                }
                api.next_headers.append(headers)
                self._reply(200, event, headers)

            def do_POST(self) -> None:
                raw = self._body()
                body = json.loads(raw) if raw else None
                if self.path == "/2018-06-01/runtime/init/error":
                    api.init_errors.append(body)
                    self._reply(202, b'{"status": "OK"}', {})
                    return
                match = _ANSWER.match(self.path)
                if match is None or match.group(1) not in api._answers:
                    self._reply(404, b'{"errorType": "InvalidRequestID"}', {})
                    return
                answer = Answer(match.group(2), body, dict(self.headers.items()))
                api._answers[match.group(1)].put(answer)
                self._reply(202, b'{"status": "OK"}', {})

        return Handler
