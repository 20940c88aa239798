"""The signed endpoint: the only way to the models, for IAM (SigV4) callers, over TLS.

An API Gateway HTTP API whose every route requires IAM authorization, with a VPC link to
the serving load balancer; `ServingStack` (stacks/serving.py) composes it. docs/security.md
is the caller's side: what a request needs, how to sign, what stays open.
"""

from __future__ import annotations

import re

import jsii
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.compliance import acknowledge_wildcard_resource
from stacks.config import EnvironmentConfig
from stacks.network import Network
from stacks.retention import log_group

__all__ = ["INVOKE_ROUTES", "SignedEndpoint"]

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


class SignedEndpoint(Construct):
    """The only way to the models: an HTTP API with IAM (SigV4) auth and a VPC link to the ALB.

    Why IAM: callers of a model are services and people who already hold AWS credentials
    (task and Lambda roles, SSO sessions); IAM gives them per-principal, least-privilege
    grants (`invoke_policy`), the caller's ARN in the access log, and nothing to rotate.
    Cognito would add a user pool and token plumbing for machine callers; API keys are
    shared secrets without identity (API Gateway does not even authorize with them on HTTP
    APIs); mTLS needs a custom domain and a private CA per team.

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
        # CloudWatch Logs' own encryption (checkov CKV_AWS_158, see stacks/retention.py).
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
