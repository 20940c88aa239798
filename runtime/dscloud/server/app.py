"""The ASGI app: routes, the one table from runtime errors to HTTP answers, access logs.

Endpoints only decode (:mod:`~dscloud.server.oip`, :mod:`~dscloud.server.invocations`),
call the scoring core and encode; they never touch onnxruntime. Each request reads
``live.scorer`` once, so an alias swap on the polling thread gives it either the old
scorer or the new one, never a mix.

Small requests are scored on the event loop (a thread hop costs more than scoring one
row); bodies above :data:`INLINE_BYTES` go to a worker thread so health checks and small
requests keep flowing meanwhile (ONNX Runtime releases the GIL while it runs).

The two scoring endpoints (``POST /invocations``, ``POST /v2/models/.../infer``) are raw
ASGI in front of Starlette: a one-row request costs tens of microseconds of Python
between the socket and ``session.run``, and Starlette's middleware, router and
``Request`` objects cost as much again (profiled: ``bench/serve.md``). They keep the same
error table, metrics and access log as every other route; everything else (health,
metadata, metrics, 404/405) is Starlette.

While an alias runs a rollout, :mod:`~dscloud.server.rollout` picks the scorer that
answers (canary) and compares the two versions once the answer is sent (shadow, and the
canary's own requests); every scoring answer carries an ``X-Request-Id``.

For ``uvicorn --workers N`` the app is built per process by :func:`app_from_env`, an
import-string factory that reads :class:`~dscloud.settings.Settings` from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from dscloud.archive import Archive
from dscloud.errors import (
    DscError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    SchemaError,
)
from dscloud.live import LiveModel, ModelSet
from dscloud.scorer import Scorer
from dscloud.server import invocations, oip
from dscloud.server.admission import CSV_COST, JSON_COST, Admission, Ticket
from dscloud.server.deadlines import BodyDeadlines, deadline_protocol
from dscloud.server.drift import ServerDrift
from dscloud.server.logs import AccessLog, configure_logging
from dscloud.server.metrics import Metrics
from dscloud.server.openapi import openapi
from dscloud.server.protocols import loads
from dscloud.server.rollout import REQUEST_ID_HEADER, ROUTE_KEY_HEADER, RequestIds, ServerRollouts
from dscloud.settings import Settings
from dscloud.version import __version__

__all__ = [
    "INLINE_BYTES",
    "MODEL_HEADER",
    "ModelServer",
    "app_from_env",
    "create_app",
    "infer_target",
]

log = logging.getLogger("dscloud.server")

#: Bodies up to this size are decoded and scored on the event loop itself.
INLINE_BYTES = 64 * 1024
#: Header choosing the model of ``POST /invocations`` when several are served.
MODEL_HEADER = "x-dsc-model"
JSON = "application/json"
#: Status recorded (never sent) when the client disconnects before its body arrived.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class Exchange:
    """What one request touched, for its metrics and its log line."""

    endpoint: str
    scorer: Scorer | None = None
    rows: int = 0
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None


Handler = Callable[[Request, Exchange], Awaitable[Response]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_INFER_PREFIX, _INFER_SUFFIX = "/v2/models/", "/infer"
_MODEL_HEADER_RAW = MODEL_HEADER.encode()
_ROUTE_KEY_RAW, _REQUEST_ID_RAW = ROUTE_KEY_HEADER.encode(), REQUEST_ID_HEADER.encode()


@dataclass(frozen=True)
class RawRoute:
    """A raw ASGI handler that Starlette mounts as an app (a bound method would be wrapped
    as a request/response function)."""

    handler: Callable[[Scope, Receive, Send], Awaitable[None]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        content = orjson.dumps(body)
    except orjson.JSONEncodeError:
        # An error message quoting a client's lone surrogate (valid JSON, not UTF-8):
        # escaped as \udXXX, as the client sent it, instead of failing the answer.
        content = json.dumps(body, ensure_ascii=True).encode()
    return Response(content, status_code=status, headers=headers, media_type=JSON)


def _model_headers(scorer: Scorer) -> dict[str, str]:
    model = scorer.identity
    return {
        "x-model-name": model.name,
        "x-model-version": str(model.version),
        "x-model-sha256": model.sha256,
    }


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version or None)`` of an OIP infer path, None for any other path."""
    if not (path.startswith(_INFER_PREFIX) and path.endswith(_INFER_SUFFIX)):
        return None
    parts = path[len(_INFER_PREFIX) : -len(_INFER_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


def error_response(exc: Exception, exchange: Exchange) -> Response:
    """The one place a runtime error becomes an HTTP answer.

    A :class:`DscError` answers with its ``status`` and message (plus the offending field
    and the model's expected schema for input errors); anything else is a bug of ours: a
    500 with no internals, and a traceback in the log.
    """
    if isinstance(exc, DscError):
        status = exc.status
        body: dict[str, Any] = {"error": exc.message}
        if isinstance(exc, SchemaError):
            body["field"] = exc.field
            body["row"] = exc.row
            if exchange.scorer is not None:
                body["expected"] = exchange.scorer.schema.describe()
        if isinstance(exc, OverloadedError):
            exchange.headers["retry-after"] = str(exc.retry_after)
    elif isinstance(exc, HTTPException):
        status, body = exc.status_code, {"error": exc.detail}
        if exc.headers:  # e.g. Allow on a 405
            exchange.headers = dict(exc.headers)
    elif isinstance(exc, ClientDisconnect):
        # The client hung up mid-body: nobody reads this answer, and it is not our fault.
        status, body = CLIENT_CLOSED, {"error": "client closed the connection mid-request"}
    else:
        log.error("internal error on %s", exchange.endpoint, exc_info=exc)
        status, body = 500, {"error": "internal server error; the details are in the server log"}
    exchange.error = body["error"]
    headers = dict(exchange.headers)
    if exchange.scorer is not None:
        headers.update(_model_headers(exchange.scorer))
    return _json(body, status, headers)


class ModelServer:
    """The endpoints of one process, over a :class:`ModelSet`."""

    def __init__(self, models: ModelSet, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self.metrics = Metrics(worker_label=settings.workers > 1)
        self.admission = Admission(
            max_concurrent=settings.max_concurrent, budget_bytes=settings.memory_budget_bytes
        )
        self.access = AccessLog()
        self.body_deadlines = BodyDeadlines(settings.body_seconds)
        self._raw_headers: dict[
            tuple[str, int | None], tuple[Scorer, list[tuple[bytes, bytes]]]
        ] = {}
        self.drift = ServerDrift(
            window_seconds=settings.drift_window_seconds,
            worker_label=settings.workers > 1,
            enabled=bool(settings.drift),
        )
        self.rollouts = ServerRollouts(
            models.archive,
            window_seconds=settings.rollout_window_seconds,
            compare_share=settings.rollout_compare_share,
        )
        self.request_ids = RequestIds()
        self._openapi = orjson.dumps(openapi(sorted(models.models)))
        self._starlette = self._build()

    # -- plumbing -------------------------------------------------------------------------

    def route(self, path: str, handler: Handler, endpoint: str, methods: list[str]) -> Route:
        """A route whose errors, metrics and access log all go through one wrapper."""

        async def run(request: Request) -> Response:
            started = time.perf_counter()
            exchange = Exchange(endpoint)
            try:
                response = await handler(request, exchange)
            except Exception as exc:
                response = error_response(exc, exchange)
            self._observe(request.method, request.url.path, exchange, response.status_code, started)
            return response

        return Route(path, run, methods=methods, name=endpoint)

    def _observe(
        self, method: str, path: str, exchange: Exchange, status: int, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        scorer = exchange.scorer
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
        }
        if scorer is None:
            model = version = ""
        else:
            model, version = scorer.name, str(scorer.version)
            fields.update(model=model, version=scorer.version, rows=exchange.rows)
        if exchange.request_id is not None:
            fields["request_id"] = exchange.request_id
        self.metrics.observe(exchange.endpoint, model, version, status, seconds, exchange.rows)
        if exchange.error is not None:
            fields["error"] = exchange.error
        self.access.request(fields)

    def _raw_model_headers(self, scorer: Scorer) -> list[tuple[bytes, bytes]]:
        """The model headers of ``scorer``'s answers, encoded once per served version."""
        key = (scorer.name, scorer.version)
        cached = self._raw_headers.get(key)
        if cached is None or cached[0] is not scorer:
            raw = [(k.encode(), v.encode()) for k, v in _model_headers(scorer).items()]
            # One entry per version (a canary answers with two of one name); a version
            # reloaded under the same number replaces its entry.
            cached = self._raw_headers[key] = (scorer, raw)
        return cached[1]

    async def not_routed(self, request: Request, exc: Exception) -> Response:
        """404 / 405 from the router, in the same shape as every other error."""
        exchange = Exchange("unrouted")
        response = error_response(exc, exchange)
        self._observe(
            request.method, request.url.path, exchange, response.status_code, time.perf_counter()
        )
        return response

    async def body(self, receive: Receive, declared: str | None, ticket: Ticket) -> bytes:
        """The request body, refused with 413 as soon as it passes the limit, 408 when it
        does not arrive within ``body_seconds``, and 503 when its memory does not fit in
        the budget (reserved on ``ticket`` before it is read).

        ``declared`` is the Content-Length header. Raises :class:`PayloadTooLargeError`,
        :class:`RequestTimeoutError`, :class:`OverloadedError`, and
        :class:`ClientDisconnect` when the client hangs up before the body is complete.
        """
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(
                f"body of {declared} bytes exceeds the limit of {limit} bytes "
                "(DSC_MAX_BODY_BYTES); send fewer rows per request"
            )
        reserved = declared is not None and declared.isdigit()
        if reserved:
            ticket.reserve(int(declared))  # type: ignore[arg-type]
        deadlines = self.body_deadlines
        if deadlines.seconds <= 0:
            return await self._read(receive, ticket, limit, reserved=reserved)
        task = deadlines.start()
        try:
            return await self._read(receive, ticket, limit, reserved=reserved)
        except asyncio.CancelledError:
            if deadlines.late(task):
                raise RequestTimeoutError(
                    f"the body did not arrive within {deadlines.seconds:g} s (DSC_BODY_SECONDS)"
                ) from None
            raise
        finally:
            deadlines.stop(task)

    async def _read(self, receive: Receive, ticket: Ticket, limit: int, *, reserved: bool) -> bytes:
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and not chunks:
                if len(chunk) > limit:
                    break
                if not reserved:
                    ticket.reserve(len(chunk))
                return bytes(chunk)  # the common case: the whole body in one message
            size += len(chunk)
            if size > limit:
                break
            if not reserved:  # chunked: reserve as it arrives
                ticket.reserve(len(chunk))
            chunks.append(chunk)
        else:
            return b"".join(chunks)
        raise PayloadTooLargeError(
            f"body exceeds the limit of {limit} bytes (DSC_MAX_BODY_BYTES); "
            "send fewer rows per request"
        )

    def live(self, name: str, version: str | None = None) -> tuple[LiveModel, Scorer]:
        """The live model and the scorer that answers this request, read once: a hot swap
        between the version check and the scoring cannot hand the request to another version."""
        live = self.models.get(name)
        scorer = live.scorer
        if version is not None and version != str(scorer.version):
            raise NotFoundError(
                f"model {name!r} is serving version {scorer.version}, not {version!r}"
            )
        return live, scorer

    # -- health and metadata --------------------------------------------------------------

    async def health_live(self, request: Request, exchange: Exchange) -> Response:
        return _json({"live": True})

    async def health_ready(self, request: Request, exchange: Exchange) -> Response:
        # Every model in the set was loaded and replayed its goldens before we were built.
        return _json({"ready": True})

    async def server_metadata(self, request: Request, exchange: Exchange) -> Response:
        models = [m.scorer.identity.to_dict() for m in self.models.models.values()]
        return _json(
            {"name": "dscloud", "version": __version__, "extensions": [], "models": models}
        )

    async def model_metadata(self, request: Request, exchange: Exchange) -> Response:
        params = request.path_params
        live, scorer = self.live(params["name"], params.get("version"))
        exchange.scorer = scorer
        body = oip.model_metadata(scorer, ref=str(live.ref), last_error=live.public_error)
        body["parameters"]["rollout"] = self.rollouts.describe(live)
        return _json(body, headers=_model_headers(scorer))

    async def model_ready(self, request: Request, exchange: Exchange) -> Response:
        params = request.path_params
        scorer = exchange.scorer = self.live(params["name"], params.get("version"))[1]
        return _json({"name": scorer.name, "ready": True}, headers=_model_headers(scorer))

    async def ping(self, request: Request, exchange: Exchange) -> Response:
        return _json({"status": "ok"})

    async def prometheus(self, request: Request, exchange: Exchange) -> Response:
        live = list(self.models.models.values())
        text = (
            self.metrics.render(live)
            + self.drift.render(m.scorer for m in live)
            + self.metrics.render_rollouts(live, self.rollouts.series())
        )
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def drift_report(self, request: Request, exchange: Exchange) -> Response:
        """The drift report of the served version over the rolling window (JSON)."""
        params = request.path_params
        scorer = exchange.scorer = self.live(params["name"], params.get("version"))[1]
        body = self.drift.report_body(scorer)
        if body is None:
            raise NotFoundError(
                f"{scorer.name}@{scorer.version} has no training baseline, so no drift is "
                "counted; re-package it to get one"
            )
        return _json(body, headers=_model_headers(scorer))

    async def openapi_json(self, request: Request, exchange: Exchange) -> Response:
        return Response(self._openapi, media_type=JSON)

    # -- scoring --------------------------------------------------------------------------

    async def score(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /invocations`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` as raw
        ASGI: decode, score, encode, then the same metrics and access line as any route."""
        started = time.perf_counter()
        path: str = scope["path"]
        target = infer_target(path)
        exchange = Exchange("invocations" if target is None else "infer")
        content_type, declared, model_header, route_key, request_id = "", None, None, None, None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                declared = value.decode("latin-1")
            elif key == _MODEL_HEADER_RAW:
                model_header = value.decode("latin-1")
            elif key == _ROUTE_KEY_RAW:
                route_key = value.decode("latin-1")
            elif key == _REQUEST_ID_RAW:
                request_id = value.decode("latin-1")
        exchange.request_id = request_id = self.request_ids.of(request_id)
        exchange.headers[REQUEST_ID_HEADER] = request_id
        trial, inline = None, True
        try:
            if target is None:
                query = scope.get("query_string", b"")
                asked = parse_qs(query.decode("latin-1"), keep_blank_values=True) if query else {}
                chosen = asked["model"][-1] if "model" in asked else None
                live = self._invocation_model(chosen, model_header)
                serving = live.scorer
            else:
                live, serving = self.live(*target)
            pinned = target is not None and target[1] is not None
            scorer, trial = self.rollouts.pick(
                live, serving, None if pinned else route_key or request_id
            )
            exchange.scorer = scorer
            csv = target is None and invocations.is_csv(content_type)
            with self.admission.request(CSV_COST if csv else JSON_COST) as ticket:
                body = await self.body(receive, declared, ticket)

                def work() -> bytes:
                    if target is None:
                        batch = invocations.decode_invocations(body, content_type, scorer.schema)
                    else:
                        batch = oip.decode_infer(loads(body), scorer.schema)
                    exchange.rows = batch.n_rows
                    if trial is None:
                        preds = scorer.score_columns(batch.columns, batch.n_rows)
                    else:  # the same call, remembered for the comparison after the answer
                        preds = trial.score(batch)
                    preds.raise_for_rejects()
                    self.drift.add(scorer, batch.columns, preds)
                    if target is None:
                        return invocations.encode_invocations(preds, scorer)
                    return oip.encode_infer(preds, scorer, batch)

                inline = len(body) <= INLINE_BYTES
                answer = work() if inline else await run_in_threadpool(work)
            status = 200
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
                *self._raw_model_headers(scorer),
                (_REQUEST_ID_RAW, request_id.encode("latin-1")),
            ]
        except Exception as exc:
            response = error_response(exc, exchange)
            status, answer, headers = (
                response.status_code,
                bytes(response.body),
                response.raw_headers,
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        self._observe("POST", path, exchange, status, started)
        if trial is None:
            return
        if inline:  # after the answer: it cannot change what was sent
            trial.compare()
        else:
            await self.rollouts.in_background(trial)

    def _invocation_model(self, query: str | None, header: str | None) -> LiveModel:
        """The model ``POST /invocations`` asked for (?model= or the header), or the only one.

        Raises :class:`SchemaError` when the two name different models, or ``?model=``
        names none."""
        if query == "":
            raise SchemaError(
                f"?model= is empty; name one of the served models: {sorted(self.models.models)}",
                field="model",
            )
        if query and header and query != header:
            raise SchemaError(
                f"?model={query} and the {MODEL_HEADER} header ({header!r}) name different "
                "models; send one of them",
                field=MODEL_HEADER,
            )
        name = query or header
        if name:
            return self.models.get(name)
        if len(self.models.models) == 1:
            return next(iter(self.models.models.values()))
        raise NotFoundError(
            f"several models are served here ({sorted(self.models.models)}); choose one with "
            "?model=NAME or the X-Dsc-Model header"
        )

    # -- the app --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: scoring requests go straight to :meth:`score`, the rest to Starlette."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/invocations" or infer_target(path) is not None:
                await self.score(scope, receive, send)
                return
        await self._starlette(scope, receive, send)

    def _build(self) -> Starlette:
        """The Starlette app for every other route; its lifespan starts and stops alias
        polling and flushes the access log. The scoring routes are declared here too (the
        same raw handler) so other methods on them get Starlette's 405."""
        get, post = ["GET"], ["POST"]
        r = self.route
        routes = [
            r("/v2", self.server_metadata, "server_metadata", get),
            r("/v2/health/live", self.health_live, "health_live", get),
            r("/v2/health/ready", self.health_ready, "health_ready", get),
            r("/v2/models/{name}", self.model_metadata, "model_metadata", get),
            r("/v2/models/{name}/versions/{version}", self.model_metadata, "model_metadata", get),
            r("/v2/models/{name}/ready", self.model_ready, "model_ready", get),
            r("/v2/models/{name}/versions/{version}/ready", self.model_ready, "model_ready", get),
            r("/v2/models/{name}/drift", self.drift_report, "drift", get),
            r("/v2/models/{name}/versions/{version}/drift", self.drift_report, "drift", get),
            Route("/v2/models/{name}/infer", RawRoute(self.score), methods=post),
            Route("/v2/models/{name}/versions/{version}/infer", RawRoute(self.score), methods=post),
            r("/ping", self.ping, "ping", get),
            Route("/invocations", RawRoute(self.score), methods=post),
            r("/metrics", self.prometheus, "metrics", get),
            r("/openapi.json", self.openapi_json, "openapi", get),
        ]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.models.start(
                self.settings.refresh_seconds,
                after_poll=lambda: self.rollouts.tick(self.models.models.values()),
            )
            # What is loaded by now (modules, models, schemas) lives as long as the process:
            # frozen out of the collector's sight, a full collection triggered on the
            # request path no longer walks all of it (bench/serve.md).
            gc.collect()
            gc.freeze()
            log.info(
                "serving",
                extra={
                    "models": {
                        m.scorer.name: m.scorer.version for m in self.models.models.values()
                    },
                    "refresh_seconds": self.settings.refresh_seconds,
                },
            )
            try:
                yield
            finally:
                self.models.stop()
                self.rollouts.flush()  # after the poller stopped: one writer at a time
                self.access.flush()

        return Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={HTTPException: self.not_routed},
        )


def create_app(models: ModelSet, settings: Settings) -> ModelServer:
    """The ASGI app serving ``models`` (already loaded and verified)."""
    return ModelServer(models, settings)


def app_from_env() -> ModelServer:
    """Uvicorn's app factory (``dscloud.server.app:app_from_env``, ``factory=True``).

    Reads settings from the environment, loads and verifies every model; raises
    :class:`~dscloud.errors.DscError` if one cannot be served.
    """
    configure_logging()
    settings = Settings.from_env()
    deadline_protocol(settings.header_seconds)  # this worker's connections, same settings
    models = ModelSet(Archive.open(settings.archive), settings.models, threads=settings.threads)
    return create_app(models, settings)
