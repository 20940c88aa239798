"""Request counts and latency histograms, written as Prometheus text at ``GET /metrics``.

Updated only on the event loop thread (the server observes after a request finishes), so
plain dicts suffice. With several workers each process keeps its own series, told apart
by a ``worker`` label; Prometheus sums them per scrape target.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable

from dscloud.live import LiveModel

__all__ = ["BUCKETS", "Metrics", "labels"]

#: Latency buckets in seconds: sub-millisecond scoring up to slow, large requests.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Key = tuple[str, str, str]  # endpoint, model, version


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    """Prometheus label text ``k="v",...`` with values escaped."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{esc(v)}"' for k, v in pairs)


_labels = labels  # the name this module's code uses


class Metrics:
    """Counters and histograms keyed by endpoint, model, version (and status for counts)."""

    def __init__(self, *, worker_label: bool = False) -> None:
        self._extra = (("worker", str(os.getpid())),) if worker_label else ()
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.rows: dict[Key, int] = {}
        self.latency: dict[Key, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(
        self, endpoint: str, model: str, version: str, status: int, seconds: float, rows: int
    ) -> None:
        """Count one finished request."""
        key4 = (endpoint, model, version, status)
        self.requests[key4] = self.requests.get(key4, 0) + 1
        key = (endpoint, model, version)
        if rows:
            self.rows[key] = self.rows.get(key, 0) + rows
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = [0.0] * (len(BUCKETS) + 2)
        hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def render(self, models: Iterable[LiveModel]) -> str:
        """The Prometheus text exposition (format 0.0.4) of every series."""
        extra = self._extra
        lines = [
            "# HELP dsc_requests_total Requests answered, by endpoint, model, version and status.",
            "# TYPE dsc_requests_total counter",
        ]
        for (endpoint, model, version, status), n in sorted(self.requests.items()):
            labels = _labels(
                (
                    ("endpoint", endpoint),
                    ("model", model),
                    ("version", version),
                    ("status", str(status)),
                    *extra,
                )
            )
            lines.append(f"dsc_requests_total{{{labels}}} {n}")
        lines += [
            "# HELP dsc_rows_total Rows scored, by endpoint, model and version.",
            "# TYPE dsc_rows_total counter",
        ]
        for (endpoint, model, version), n in sorted(self.rows.items()):
            labels = _labels(
                (("endpoint", endpoint), ("model", model), ("version", version), *extra)
            )
            lines.append(f"dsc_rows_total{{{labels}}} {n}")
        lines += [
            "# HELP dsc_request_duration_seconds Time from request to answer, in seconds.",
            "# TYPE dsc_request_duration_seconds histogram",
        ]
        for (endpoint, model, version), hist in sorted(self.latency.items()):
            base = (("endpoint", endpoint), ("model", model), ("version", version), *extra)
            cumulative = 0.0
            for bound, count in zip((*BUCKETS, "+Inf"), hist[:-1], strict=True):
                cumulative += count
                labels = _labels((*base, ("le", str(bound))))
                lines.append(f"dsc_request_duration_seconds_bucket{{{labels}}} {int(cumulative)}")
            labels = _labels(base)
            lines.append(f"dsc_request_duration_seconds_sum{{{labels}}} {hist[-1]:.6f}")
            lines.append(f"dsc_request_duration_seconds_count{{{labels}}} {int(cumulative)}")
        lines += [
            "# HELP dsc_model_info The version each served model answers with (value 1).",
            "# TYPE dsc_model_info gauge",
        ]
        live = list(models)
        for m in live:
            s = m.scorer
            labels = _labels(
                (
                    ("model", s.name),
                    ("version", str(s.version)),
                    ("sha256", s.sha256),
                    ("ref", str(m.ref)),
                    *extra,
                )
            )
            lines.append(f"dsc_model_info{{{labels}}} 1")
        lines += [
            "# HELP dsc_model_refresh_failing 1 while the newest version of a model's alias "
            "failed verification and the previous one keeps serving.",
            "# TYPE dsc_model_refresh_failing gauge",
        ]
        for m in live:
            labels = _labels((("model", m.scorer.name), *extra))
            lines.append(f"dsc_model_refresh_failing{{{labels}}} {int(m.last_error is not None)}")
        rss = _rss_bytes()
        if rss is not None:
            lines += [
                "# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes{{{_labels(extra)}}} {rss}"
                if extra
                else f"process_resident_memory_bytes {rss}",
            ]
        return "\n".join(lines) + "\n"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
