"""Serving: the model server (docker/serving.Dockerfile) on ECS Fargate behind an ALB,
reached only through a signed endpoint.

Callers reach the models through `SignedEndpoint` (stacks/endpoint.py, which says why
IAM): an API Gateway HTTP API whose every route requires IAM authorization (SigV4), with a
VPC link to the load balancer. The load balancer admits that link and nothing else by
default (`serving.ingress_cidrs` is an explicit, unauthenticated opt-out; see
stacks/network.py), is internal unless `serving.internet_facing`, speaks HTTPS when a
certificate is configured, and routes to tasks only once `GET /v2/health/ready` answers
(the server replays the envelope's golden examples before it says ready). The service
scales on CPU and on requests per task. docs/security.md is the caller's side.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.archive import Archive
from stacks.assets import AssetSources
from stacks.compliance import acknowledge
from stacks.config import EnvironmentConfig
from stacks.endpoint import SignedEndpoint
from stacks.network import Network
from stacks.retention import log_group

__all__ = [
    "CONTAINER_PORT",
    "READINESS_PATH",
    "RESERVED_MIB",
    "Serving",
    "ServingStack",
    "memory_budget_bytes",
]

CONTAINER_PORT = 8080
READINESS_PATH = "/v2/health/ready"
#: Task memory kept outside request bodies: Python, ONNX Runtime, the models, allocator slack.
RESERVED_MIB = 300


def memory_budget_bytes(task_memory_mib: int) -> int:
    """The serving process's request-memory budget (``DSC_MEMORY_BUDGET_BYTES``) in a task
    of ``task_memory_mib``: what is left after :data:`RESERVED_MIB`. The task runs one
    server process, so the whole budget is its; over it, requests get 503, not an OOM kill."""
    return max(0, task_memory_mib - RESERVED_MIB) * 1024 * 1024


class Serving(Construct):
    """Cluster with Container Insights, load balancer, Fargate service and its autoscaling."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        archive_uri: str,
        access_log_bucket: s3.IBucket,
        assets: AssetSources,
    ) -> None:
        super().__init__(scope, id)
        settings = config.serving
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            cluster_name=f"{config.name}-serving",
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=network.vpc,
            vpc_subnets=network.load_balancer_subnets,
            internet_facing=settings.internet_facing,
            security_group=network.load_balancer_security_group,
            drop_invalid_header_fields=True,
        )
        self.load_balancer.log_access_logs(access_log_bucket, prefix="alb")
        # CloudWatch Logs' own encryption (checkov CKV_AWS_158, see stacks/retention.py).
        self.log_group = log_group(
            self, "Logs", name=f"/ecs/{config.name}-serving", days=config.retention_days
        )
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"{config.name}: pulls the serving image, writes its logs",
        )
        acknowledge(
            self.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, granted for pulling the serving image, has no "
            "resource-level permissions; the pull actions themselves are limited to the asset "
            "repository.",
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"{config.name}: model server (reads models from the archive)",
        )
        certificate = (
            acm.Certificate.from_certificate_arn(self, "Certificate", settings.certificate_arn)
            if settings.certificate_arn
            else None
        )
        self.https = certificate is not None
        self.service = ecs_patterns.ApplicationLoadBalancedFargateService(
            self,
            "Service",
            cluster=self.cluster,
            service_name=f"{config.name}-serving",
            load_balancer=self.load_balancer,
            open_listener=False,
            # Without a certificate the listener is HTTP:80 (checkov CKV_AWS_2, CKV_AWS_103;
            # justified in docs/security.md): TLS needs a name the team owns, and only the
            # VPC link, behind the HTTPS and SigV4 endpoint, may reach this listener.
            certificate=certificate,
            protocol=elbv2.ApplicationProtocol.HTTPS
            if self.https
            else elbv2.ApplicationProtocol.HTTP,
            redirect_http=self.https,
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS if self.https else None,
            cpu=settings.cpu,
            memory_limit_mib=settings.memory_mib,
            desired_count=settings.min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=cdk.Duration.seconds(120),
            task_subnets=network.task_subnets,
            security_groups=[network.serving_security_group],
            assign_public_ip=network.assign_public_ip,
            task_image_options=ecs_patterns.ApplicationLoadBalancedTaskImageOptions(
                image=assets.serving_image(self, config.serving.image),
                container_name="serving",
                container_port=CONTAINER_PORT,
                execution_role=self.execution_role,
                task_role=self.task_role,
                log_driver=ecs.LogDriver.aws_logs(
                    stream_prefix="serving", log_group=self.log_group
                ),
                environment={
                    "DSC_ARCHIVE": archive_uri,
                    "DSC_MODELS": " ".join(str(model) for model in config.models),
                    "DSC_REFRESH_SECONDS": str(config.refresh_seconds),
                    "DSC_MEMORY_BUDGET_BYTES": str(memory_budget_bytes(settings.memory_mib)),
                },
            ),
        )
        acknowledge(
            self.service.task_definition,
            "AwsSolutions-ECS2",
            "The environment variables are plain settings (archive URI, model references, refresh "
            "interval, memory budget), not secrets; the task reads models with its IAM role.",
        )
        self.service.target_group.configure_health_check(
            path=READINESS_PATH,
            healthy_http_codes="200",
            interval=cdk.Duration.seconds(15),
            timeout=cdk.Duration.seconds(5),
            healthy_threshold_count=2,
            unhealthy_threshold_count=3,
        )
        scaling = self.service.service.auto_scale_task_count(
            min_capacity=settings.min_tasks, max_capacity=settings.max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "Cpu", target_utilization_percent=settings.target_cpu_percent
        )
        scaling.scale_on_request_count(
            "Requests",
            requests_per_target=settings.target_requests_per_task,
            target_group=self.service.target_group,
        )
        scheme = "https" if self.https else "http"
        self.url = f"{scheme}://{self.load_balancer.load_balancer_dns_name}"


class ServingStack(cdk.Stack):
    """Composes the serving service behind its signed endpoint and grants its task role read
    access to the models."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        archive: Archive,
        assets: AssetSources,
    ) -> None:
        super().__init__(scope, id, description=f"{config.name}: model serving (dscloud)")
        self.serving = Serving(
            self,
            "Serving",
            config=config,
            network=network,
            archive_uri=archive.uri,
            access_log_bucket=archive.log_bucket,
            assets=assets,
        )
        archive.grant_read_models(self.serving.task_role)
        self.endpoint = SignedEndpoint(
            self,
            "Endpoint",
            config=config,
            network=network,
            listener=self.serving.service.listener,
            listener_port=network.listener_ports[0],
        )
        cdk.CfnOutput(
            self,
            "EndpointUrl",
            value=self.endpoint.url,
            description="the model endpoint: SigV4-signed requests (dsc invoke) only",
        )
        cdk.CfnOutput(
            self,
            "InvokePolicyArn",
            value=self.endpoint.invoke_policy.managed_policy_arn,
            description="attach to a caller's role to let it call the endpoint",
        )
        if self.endpoint.domain_target is not None:
            cdk.CfnOutput(
                self,
                "DomainTarget",
                value=self.endpoint.domain_target,
                description=f"point {config.serving.domain_name} here (CNAME or alias)",
            )
        # The load balancer's own address: reachable only from the VPC link (and any
        # serving.ingress_cidrs), kept for operators and health checks.
        cdk.CfnOutput(self, "ServiceUrl", value=self.serving.url)
        cdk.CfnOutput(self, "ClusterName", value=self.serving.cluster.cluster_name)
