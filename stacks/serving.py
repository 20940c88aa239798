"""Serving: the model server (docker/serving.Dockerfile) on ECS Fargate behind an ALB,
reached only through a signed endpoint.

Callers reach the models through `SignedEndpoint`: an API Gateway HTTP API whose every
route requires IAM authorization (SigV4), with a VPC link to the load balancer. The load
balancer admits that link and nothing else by default (`serving.ingress_cidrs` is an
explicit, unauthenticated opt-out; see stacks/network.py), is internal unless
`serving.internet_facing`, speaks HTTPS when a certificate is configured, and routes to
tasks only once `GET /v2/health/ready` answers (the server replays the envelope's golden
examples before it says ready). The service scales on CPU and on requests per task.
docs/security.md says what a caller needs and why IAM.
"""

from __future__ import annotations

import re

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.archive import Archive
from stacks.assets import AssetSources
from stacks.compliance import acknowledge, acknowledge_wildcard_resource
from stacks.config import EnvironmentConfig
from stacks.network import Network
from stacks.retention import log_group

__all__ = [
    "CONTAINER_PORT",
    "INVOKE_ROUTES",
    "READINESS_PATH",
    "Serving",
    "ServingStack",
    "SignedEndpoint",
]

CONTAINER_PORT = 8080
READINESS_PATH = "/v2/health/ready"
# The API's routes, each IAM-authorized, and all a granted caller may call: scoring on both
# protocols and every read (health, metadata, the OpenAPI document). No `$default` route:
# any other method or path is a 404 from API Gateway and never reaches a task.
INVOKE_ROUTES = (("POST", "/invocations"), ("POST", "/v2/models/{proxy+}"), ("GET", "/{proxy+}"))
# One JSON line per request: who called (the IAM principal), what, and how it ended.
_ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","time":"$context.requestTime",'
    '"caller":"$context.identity.userArn","account":"$context.identity.accountId",'
    '"ip":"$context.identity.sourceIp","route":"$context.routeKey","path":"$context.path",'
    '"status":"$context.status","length":"$context.responseLength",'
    '"latencyMs":"$context.responseLatency","integrationStatus":"$context.integrationStatus",'
    '"integrationError":"$context.integrationErrorMessage",'
    '"authError":"$context.authorizer.error"}'
)


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
                image=assets.serving_image(),
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
                },
            ),
        )
        acknowledge(
            self.service.task_definition,
            "AwsSolutions-ECS2",
            "The environment variables are plain settings (archive URI, model references, refresh "
            "interval), not secrets; the task reads models with its IAM role.",
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


class SignedEndpoint(Construct):
    """The only way to the models: an HTTP API with IAM (SigV4) auth and a VPC link to the ALB.

    Why IAM: callers of a model are services and people who already hold AWS credentials
    (task and Lambda roles, SSO sessions); IAM gives them per-principal, least-privilege
    grants (`invoke_policy`), CloudTrail-style attribution in the access log and nothing
    to rotate. Cognito would add a user pool and token plumbing for machine callers; API
    keys are shared secrets without identity (API Gateway does not even authorize with
    them on HTTP APIs); mTLS needs a custom domain and a private CA per team.

    TLS without a domain: the API's execute-api default endpoint serves an AWS certificate.
    With `serving.certificate_arn` and `serving.domain_name`, the API also answers on that
    custom domain (TLS 1.2), and the VPC link calls the ALB's HTTPS listener verifying that
    name. The load balancer stays internal (it has no reason to be reachable from outside:
    the VPC link enters the VPC) and its security group admits only the link's; health
    checks stay between the ALB and the tasks. Every route (INVOKE_ROUTES) requires
    `AWS_IAM` and there is no catch-all `$default` route: there is no unauthenticated path
    through the API.

    `url` is the endpoint, `invoke_policy` the managed policy a caller's role needs
    (`grant_invoke(role)` attaches it), `api` and `stage` the API Gateway constructs.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        listener: elbv2.IApplicationListener,
        listener_port: int,
    ) -> None:
        super().__init__(scope, id)
        settings = config.serving
        self.security_group = ec2.SecurityGroup(
            self,
            "LinkSecurityGroup",
            vpc=network.vpc,
            description=f"{config.name}: API Gateway VPC link (to the load balancer only)",
            allow_all_outbound=False,
        )
        balancer = network.load_balancer_security_group
        self.security_group.add_egress_rule(
            ec2.Peer.security_group_id(balancer.security_group_id),
            ec2.Port.tcp(listener_port),
            "to the model server load balancer",
        )
        # remote_rule: the rule lives in this stack, so Network does not depend on Serving.
        balancer.add_ingress_rule(
            self.security_group,
            ec2.Port.tcp(listener_port),
            "signed endpoint (API Gateway VPC link)",
            remote_rule=True,
        )
        self.vpc_link = apigwv2.VpcLink(
            self,
            "VpcLink",
            vpc=network.vpc,
            subnets=network.load_balancer_subnets,
            security_groups=[self.security_group],
            vpc_link_name=f"{config.name}-serving",
        )
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            api_name=f"{config.name}-serving",
            description=f"{config.name}: model serving, IAM (SigV4) callers only",
            create_default_stage=False,
            default_authorizer=authorizers.HttpIamAuthorizer(),
        )
        load_balancer = integrations.HttpAlbIntegration(
            "LoadBalancer",
            listener,
            vpc_link=self.vpc_link,
            secure_server_name=settings.domain_name,
        )
        for method, path in INVOKE_ROUTES:
            self.api.add_routes(
                path=path, methods=[apigwv2.HttpMethod(method)], integration=load_balancer
            )
        self.access_logs = log_group(
            self,
            "AccessLogs",
            name=f"/aws/apigateway/{config.name}-serving",
            days=config.retention_days,
        )
        self.stage = apigwv2.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            access_log_settings=_AccessLog(self.access_logs),
        )
        self.url = self.stage.url
        self.domain_target: str | None = None
        if settings.certificate_arn is not None and settings.domain_name is not None:
            domain = apigwv2.DomainName(
                self,
                "Domain",
                domain_name=settings.domain_name,
                certificate=acm.Certificate.from_certificate_arn(
                    self, "Certificate", settings.certificate_arn
                ),
                security_policy=apigwv2.SecurityPolicy.TLS_1_2,
            )
            apigwv2.ApiMapping(self, "Mapping", api=self.api, domain_name=domain, stage=self.stage)
            self.url = f"https://{settings.domain_name}/"
            # Where the team's DNS record for domain_name must point (CNAME or alias).
            self.domain_target = domain.regional_domain_name
        # IAM matches the request's own path: a greedy {proxy+} becomes a wildcard.
        self.invoke_resources = [
            self.api.arn_for_execute_api(method, _iam_path(path), self.stage.stage_name)
            for method, path in INVOKE_ROUTES
        ]
        self.invoke_policy = iam.ManagedPolicy(
            self,
            "InvokePolicy",
            description=f"{config.name}: call the model endpoint (score, read metadata)",
            statements=[
                iam.PolicyStatement(actions=["execute-api:Invoke"], resources=self.invoke_resources)
            ],
        )
        for resource, (_, path) in zip(self.invoke_resources, INVOKE_ROUTES, strict=True):
            if "{" not in path:
                continue
            acknowledge_wildcard_resource(
                self.invoke_policy,
                resource,
                "execute-api ARNs of this API's $default stage only; model names and "
                "metadata paths are runtime values, so the path ends in a wildcard.",
            )

    def grant_invoke(self, role: iam.IRole) -> None:
        """Let `role` call the endpoint: attaches `invoke_policy` (the routes INVOKE_ROUTES)."""
        role.add_managed_policy(self.invoke_policy)


def _iam_path(route_path: str) -> str:
    # As aws-cdk's HttpRoute.grantInvoke: a path variable and all after it become `*`.
    return re.sub(r"\{.*?\}.*", "*", route_path)


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLog:
    """The stage's access log: `_ACCESS_LOG_FORMAT` lines into `log_group`."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(_ACCESS_LOG_FORMAT)


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
