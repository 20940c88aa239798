"""A completed run's drift figures as CloudWatch metrics, for the nightly job's alarms.

When a run completes (its ``_SUCCESS`` is about to be written, :mod:`dscloud.batch.manifest`),
the run's merged drift report is published with one ``PutMetricData`` call: the figures
of :func:`~dscloud.drift_report.metric_figures`, the one mapping the stream handler
(:mod:`dscloud.stream.drift`) publishes too, in the same namespace convention
(``dscloud``, set by the stack): a figure means the same wherever it was counted.
Each figure is sent under two dimension sets: ``service`` + ``model`` (the one the stack's
alarms watch: a version is not known at synth, and the nightly job follows an alias) and
``service`` + ``model`` + ``version`` (to tell versions apart on a graph). ``service`` is
the environment's job (``dsc-recs-dev-score``), so two environments in one account never
set off each other's alarms.

Why ``PutMetricData`` and not EMF: CloudWatch extracts EMF from a log group only when the
log events arrive with the ``x-amzn-logs-format: json/emf`` header (the Lambda runtime and
the CloudWatch agent send it); AWS Batch's ``awslogs`` driver sends plain
``PutLogEvents``, so an EMF line in the job's log would stay a log line and no alarm would
ever see it. One call per completed run costs nothing, needs one IAM action (the stack
grants ``cloudwatch:PutMetricData`` for this namespace only), and is tested against moto.

Publishing never fails the run: its parts are written and its figures are in ``_SUCCESS``
either way. An AWS error is logged and noted in ``_SUCCESS`` (``"metrics": {"error": ...}``);
the client's timeouts and retries are bounded so a missing endpoint cannot hold the job.
Unset ``DSC_METRICS_NAMESPACE`` (local runs) publishes nothing and notes nothing. Several
shards may finish last at once and each publish the same figures: a duplicate datapoint
changes no ``Maximum``, which is what the alarms read; a re-run over a complete output
publishes again. ``dsc score --finalize`` writes ``_SUCCESS`` without publishing: the
nightly array job never calls it (its last child completes the run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dscloud.drift_report import ALARMED_METRICS, ROWS_METRIC, metric_figures

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.literals import StandardUnitType
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDatumTypeDef

__all__ = ["ALARMED_METRICS", "ROWS_METRIC", "MetricsTarget", "publish_drift"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsTarget:
    """Where a run's drift metrics go: a CloudWatch ``namespace`` and the ``service``
    dimension (``DSC_METRICS_NAMESPACE``, ``DSC_METRICS_SERVICE``)."""

    namespace: str
    service: str

    def dimension_sets(self, model: Mapping[str, Any]) -> list[list[DimensionTypeDef]]:
        """The dimension sets each figure is sent under: service + model (alarmed), and the
        same + version. ``model`` is the run's ``{"name", "version", ...}``."""
        alarmed: list[DimensionTypeDef] = [
            {"Name": "service", "Value": self.service},
            {"Name": "model", "Value": str(model["name"])},
        ]
        return [alarmed, [*alarmed, {"Name": "version", "Value": str(model["version"])}]]


def publish_drift(
    summary: Mapping[str, Any],
    target: MetricsTarget,
    *,
    client: CloudWatchClient | None = None,
) -> dict[str, Any]:
    """Publish the drift figures of the completed run ``summary`` (the ``_SUCCESS`` content)
    to ``target``.

    Returns what ``_SUCCESS`` notes under ``"metrics"``: the namespace, dimensions and the
    metric names sent, ``"published": False`` with the reason when the run has no drift
    report (a model without a baseline, or ``--no-drift``), or ``"error"`` when CloudWatch
    refused or could not be reached. Raises nothing for an AWS error: that is logged.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    model = summary["model"]
    note: dict[str, Any] = {
        "namespace": target.namespace,
        "dimensions": {"service": target.service, "model": model["name"]},
        "version": model["version"],
    }
    drift = summary.get("drift")
    if drift is None:
        return {**note, "published": False, "reason": "the run has no drift report"}
    figures = metric_figures(drift)
    data: list[MetricDatumTypeDef] = [
        {
            "MetricName": name,
            "Value": value,
            "Unit": cast("StandardUnitType", unit),
            "Dimensions": dimensions,
        }
        for name, value, unit in figures
        for dimensions in target.dimension_sets(model)
    ]
    try:
        (client or _client()).put_metric_data(Namespace=target.namespace, MetricData=data)
    except (BotoCoreError, ClientError) as exc:
        log.warning(
            "drift metrics of %s not published to CloudWatch namespace %s: %s",
            summary.get("output"),
            target.namespace,
            exc,
        )
        return {**note, "published": False, "error": str(exc)}
    log.info("drift metrics published to CloudWatch namespace %s", target.namespace)
    return {**note, "published": True, "metrics": {name: value for name, value, _ in figures}}


def _client() -> CloudWatchClient:
    """A CloudWatch client whose timeouts and retries end within about a minute."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})
    return boto3.client("cloudwatch", config=config)
