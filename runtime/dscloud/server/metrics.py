"""Request counts and latency histograms, written as Prometheus text at ``GET /metrics``.

Updated only on the event loop thread (the server observes after a request finishes), so
plain dicts suffice. With several workers each process keeps its own series, told apart
by a ``worker`` label; Prometheus sums them per scrape target.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Mapping
from typing import Any

from dscloud.live import LiveModel

__all__ = ["BUCKETS", "Metrics", "RolloutSeries", "labels"]

#: Latency buckets in seconds: sub-millisecond scoring up to slow, large requests.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Key = tuple[str, str, str]  # endpoint, model, version
#: One rollout comparison: its labels (model, alias, rollout, current, candidate), its
#: :meth:`~dscloud.rollout_compare.Comparison.figures`, and the comparisons skipped.
RolloutSeries = tuple[tuple[tuple[str, str], ...], Mapping[str, Any], int]


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

    def render_rollouts(
        self, models: Iterable[LiveModel], comparisons: Iterable[RolloutSeries]
    ) -> str:
        """Prometheus text of the rollouts this process follows and of its comparisons
        (since the rollout started in this process; ``role`` is current or candidate)."""
        extra = self._extra
        lines = [
            "# HELP dsc_rollout_info The rollout a served alias runs (value 1): mode, share, "
            "the serving and the candidate version.",
            "# TYPE dsc_rollout_info gauge",
        ]
        failing: list[str] = []
        for m in models:
            following, ref = m.following, m.ref
            if following is not None and ref.alias is not None:
                rollout = following[0]
                pairs = (
                    ("model", m.scorer.name),
                    ("alias", ref.alias),
                    ("rollout", rollout.id),
                    ("mode", rollout.mode),
                    ("share", f"{rollout.share:g}"),
                    ("current", str(m.scorer.version)),
                    ("candidate", str(rollout.candidate)),
                    *extra,
                )
                lines.append(f"dsc_rollout_info{{{_labels(pairs)}}} 1")
            failing.append(
                f"dsc_rollout_candidate_failing{{{_labels((('model', m.scorer.name), *extra))}}} "
                f"{int(m.rollout_error is not None)}"
            )
        lines += [
            "# HELP dsc_rollout_candidate_failing 1 while the alias runs a rollout whose "
            "candidate this process refused (it answers no one; see the model's metadata).",
            "# TYPE dsc_rollout_candidate_failing gauge",
            *failing,
        ]
        series: dict[str, list[str]] = {name: [] for name in _ROLLOUT_HELP}
        for base, figures, skipped in comparisons:
            base = (*base, *extra)
            add = series.__getitem__
            add("dsc_rollout_rows_compared_total").append(
                f"dsc_rollout_rows_compared_total{{{_labels(base)}}} {figures['rows_compared']}"
            )
            add("dsc_rollout_disagreements_total").append(
                f"dsc_rollout_disagreements_total{{{_labels(base)}}} {figures['disagreements']}"
            )
            add("dsc_rollout_disagreement_rate").append(
                f"dsc_rollout_disagreement_rate{{{_labels(base)}}} "
                f"{figures['disagreement_rate']:.6g}"
            )
            cumulative = 0
            delta = figures["delta"]
            for edge, count in zip(delta["edges"], delta["counts"], strict=True):
                cumulative += count
                le = "+Inf" if edge == "inf" else f"{edge:g}"
                add("dsc_rollout_delta_rows").append(
                    f"dsc_rollout_delta_rows{{{_labels((*base, ('le', le)))}}} {cumulative}"
                )
            add("dsc_rollout_skipped_total").append(
                f"dsc_rollout_skipped_total{{{_labels(base)}}} {skipped}"
            )
            for role, v in figures["versions"].items():
                own = (*base, ("role", role), ("version", str(v["version"])))
                add("dsc_rollout_version_rows_total").append(
                    f"dsc_rollout_version_rows_total{{{_labels(own)}}} {v['rows']}"
                )
                add("dsc_rollout_version_errors_total").append(
                    f"dsc_rollout_version_errors_total{{{_labels(own)}}} {v['errors']}"
                )
                add("dsc_rollout_version_error_rate").append(
                    f"dsc_rollout_version_error_rate{{{_labels(own)}}} {v['error_rate']:.6g}"
                )
                for q in ("p50", "p95"):
                    edge = v["latency_ms"][q]
                    if edge is None:
                        continue
                    value = "+Inf" if edge == "inf" else f"{edge:g}"
                    quantile = (*own, ("quantile", "0.5" if q == "p50" else "0.95"))
                    add("dsc_rollout_call_latency_ms").append(
                        f"dsc_rollout_call_latency_ms{{{_labels(quantile)}}} {value}"
                    )
        for metric, (help_line, type_line) in _ROLLOUT_HELP.items():
            lines += [help_line, type_line, *series[metric]]
        return "\n".join(lines) + "\n"


#: The comparison series of :meth:`Metrics.render_rollouts`: their HELP and TYPE lines
#: (written out whole: the docs check reads the TYPE lines from this file).
_ROLLOUT_HELP = {
    "dsc_rollout_rows_compared_total": (
        "# HELP dsc_rollout_rows_compared_total Rows both versions of a rollout scored,"
        " by model, alias, rollout and both versions.",
        "# TYPE dsc_rollout_rows_compared_total counter",
    ),
    "dsc_rollout_disagreements_total": (
        "# HELP dsc_rollout_disagreements_total Compared rows whose labels differ "
        "(regression: values differ by more than 1e-6).",
        "# TYPE dsc_rollout_disagreements_total counter",
    ),
    "dsc_rollout_disagreement_rate": (
        "# HELP dsc_rollout_disagreement_rate Disagreements over rows compared.",
        "# TYPE dsc_rollout_disagreement_rate gauge",
    ),
    "dsc_rollout_delta_rows": (
        "# HELP dsc_rollout_delta_rows Compared rows whose largest |difference of "
        "probability| (regression: of value) is at most le.",
        "# TYPE dsc_rollout_delta_rows gauge",
    ),
    "dsc_rollout_skipped_total": (
        "# HELP dsc_rollout_skipped_total Requests not compared: a canary's beyond its share "
        "of the process's time, or large bodies while the background comparisons were full.",
        "# TYPE dsc_rollout_skipped_total counter",
    ),
    "dsc_rollout_version_rows_total": (
        "# HELP dsc_rollout_version_rows_total Rows each version of a rollout was asked"
        " to score in the comparison, by role.",
        "# TYPE dsc_rollout_version_rows_total counter",
    ),
    "dsc_rollout_version_errors_total": (
        "# HELP dsc_rollout_version_errors_total Of those, rows the version alone "
        "refused or lost to a failed call, by role.",
        "# TYPE dsc_rollout_version_errors_total counter",
    ),
    "dsc_rollout_version_error_rate": (
        "# HELP dsc_rollout_version_error_rate Errors over rows, by role.",
        "# TYPE dsc_rollout_version_error_rate gauge",
    ),
    "dsc_rollout_call_latency_ms": (
        "# HELP dsc_rollout_call_latency_ms Upper edge of the latency bin holding the "
        "quantile of each version's scoring calls, in milliseconds, by role.",
        "# TYPE dsc_rollout_call_latency_ms gauge",
    ),
}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
