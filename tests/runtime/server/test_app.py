"""The raw ASGI routing of the scoring endpoints and the batched access log."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from dscloud.server.app import infer_target
from dscloud.server.logs import ACCESS_LOGGER, AccessLog


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/churn/infer", ("churn", None)),
        ("/v2/models/churn/versions/3/infer", ("churn", "3")),
        ("/v2/models//infer", None),
        ("/v2/models/churn/ready", None),
        ("/v2/models/churn/versions//infer", None),
        ("/v2/models/a/b/infer", None),
        ("/invocations", None),
    ],
)
def test_infer_target_matches_exactly_the_routes_starlette_declares(
    path: str, target: tuple[str, str | None] | None
) -> None:
    assert infer_target(path) == target


def test_access_log_writes_one_json_line_per_request_once_flushed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    log = AccessLog()

    async def two_requests() -> None:
        log.request({"method": "POST", "path": "/invocations", "status": 200})
        log.request({"method": "POST", "path": "/invocations", "status": 400, "error": "x"})
        assert capsys.readouterr().out == ""  # buffered until the timer fires
        await asyncio.sleep(AccessLog.FLUSH_SECONDS * 3)

    asyncio.run(two_requests())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["logger"], r["msg"], r["status"]) for r in lines] == [
        (ACCESS_LOGGER, "request", 200),
        (ACCESS_LOGGER, "request", 400),
    ]
    assert lines[1]["error"] == "x" and lines[0]["level"] == "info" and "ts" in lines[0]


def test_access_log_obeys_the_access_logger_level(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        log = AccessLog()
        log.request({"method": "GET", "path": "/ping", "status": 200})
        log.flush()
    finally:
        logger.setLevel(before)
    assert capsys.readouterr().out == ""
