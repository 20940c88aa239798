"""The ceiling of the serving benchmark: a bare ASGI app that answers a fixed body.

No routing, no JSON decoding, no model: it reads the request body (as any server must, to
keep the connection usable) and answers the same small JSON document every time. Served by
the same stack and settings as ``dsc serve`` (uvicorn with uvloop and httptools, no access
log, no server header), its requests/s are the most any Python server on this stack can
reach on this machine; ``bench/serve.py`` reports every server as a fraction of it.

    uvicorn ceiling:app --app-dir bench --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BODY", "app"]

#: The size of a one-row answer of ``dsc serve`` (two class probabilities).
BODY = b'{"predictions":[[0.8765432,0.1234568]]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answer every HTTP request with :data:`BODY`; acknowledge lifespan events."""
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": f"{event}.complete"})
            if event == "lifespan.shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
