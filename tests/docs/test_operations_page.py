"""docs/operations.md names the metrics the runtimes really emit, and all of them."""

from __future__ import annotations

import ast
import re

from tests.docs.pages import ROOT, page

SERVER_METRICS = ROOT / "runtime" / "dscloud" / "server" / "metrics.py"
STREAM_HANDLER = ROOT / "runtime" / "dscloud" / "stream" / "handler.py"


def prometheus_series() -> set[str]:
    """The metric families ``GET /metrics`` declares (its ``# TYPE`` lines)."""
    source = SERVER_METRICS.read_text(encoding="utf-8")
    return set(re.findall(r"# TYPE (dsc_\w+) ", source))


def stream_metrics() -> set[str]:
    """The CloudWatch metric names the stream handler adds (constant ``name=`` arguments
    and the names of its outcome table)."""
    tree = ast.parse(STREAM_HANDLER.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("add_metric"):
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    names.add(str(keyword.value.value))
        if isinstance(node, ast.Tuple) and len(node.elts) == 2:
            second = node.elts[1]
            if isinstance(second, ast.Constant) and re.fullmatch(
                r"(Records|Predictions)[A-Z]\w+", str(second.value)
            ):
                names.add(str(second.value))
    return names


def test_the_prometheus_series_are_the_servers() -> None:
    text = page("docs/operations.md").text
    documented = set(re.findall(r"`(dsc_\w+)`", text))
    real = prometheus_series()
    assert "dsc_requests_total" in real  # the scan sees the server's series
    assert documented == real, (
        f"documented, not emitted: {sorted(documented - real)}; "
        f"emitted, not documented: {sorted(real - documented)}"
    )


def test_the_stream_metrics_are_the_handlers() -> None:
    text = page("docs/operations.md").text
    documented = set(re.findall(r"`((?:Records|Predictions)[A-Z]\w+)`", text))
    real = stream_metrics()
    assert {"RecordsReceived", "RecordsRejected"} <= real  # the scan sees the handler's
    assert documented == real, (
        f"documented, not emitted: {sorted(documented - real)}; "
        f"emitted, not documented: {sorted(real - documented)}"
    )
