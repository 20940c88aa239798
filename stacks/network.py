"""The environment's network: a VPC (new, without NAT gateways, or an existing one looked
up) and the security groups of everything that runs in it.

A new VPC has only public subnets in two zones. Fargate tasks (serving and batch) run there
with a public IP for egress (ECR, CloudWatch Logs, Kinesis, DynamoDB) and security groups
that admit nothing from outside but the load balancer. That avoids NAT gateways (about
32 USD a month each, plus data) and interface endpoints (about 7 USD per endpoint and
zone). S3 traffic goes through a free gateway endpoint. With `vpc_id` set, the tasks run in
that VPC's private subnets with egress instead.

The load balancer admits, by default, nobody from here: the serving stack lets in its signed
endpoint's VPC link (stacks/endpoint.py, `SignedEndpoint`) and nothing else. CIDRs in
`serving.ingress_cidrs` are an explicit opt-out that reaches the listener ports without
authentication. Serving tasks admit only the load balancer (wired by the serving stack);
batch tasks admit nothing.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.compliance import acknowledge
from stacks.config import EnvironmentConfig

__all__ = ["VPC_CIDR", "Network", "NetworkStack"]

VPC_CIDR = "10.0.0.0/16"
_WORLD = "0.0.0.0/0"


class Network(Construct):
    """The VPC, where tasks and load balancers go in it, and their security groups."""

    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, flow_log_bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, id)
        if config.vpc_id is not None:
            self.vpc: ec2.IVpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=config.vpc_id)
            self.cidr = self.vpc.vpc_cidr_block  # a literal: looked up at synth, cached in context
            self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
            self.assign_public_ip = False
        else:
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
                max_azs=2,
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(
                        name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22
                    )
                ],
                gateway_endpoints={
                    "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
                },
                flow_logs={
                    "ToS3": ec2.FlowLogOptions(
                        destination=ec2.FlowLogDestination.to_s3(flow_log_bucket, "vpc-flow-logs/"),
                        traffic_type=ec2.FlowLogTrafficType.ALL,
                    )
                },
                # A CDK custom resource whose provider Lambda CloudFormation alone invokes
                # (checkov CKV_AWS_115/116/117 on it are justified in docs/security.md).
                restrict_default_security_group=config.restrict_default_security_group,
            )
            self.cidr = VPC_CIDR
            self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
            self.assign_public_ip = True
        public_lb = config.serving.internet_facing or config.vpc_id is None
        self.load_balancer_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PUBLIC if public_lb else ec2.SubnetType.PRIVATE_WITH_EGRESS
        )
        self.batch_security_group = self._security_group(
            "Batch", f"{config.name}: batch jobs (no inbound)"
        )
        self.serving_security_group = self._security_group(
            "ServingTasks",
            f"{config.name}: model server tasks (inbound from the load balancer only)",
        )
        self.load_balancer_security_group = self._security_group(
            "LoadBalancer", f"{config.name}: model server load balancer", allow_all_outbound=False
        )
        self.listener_ports = (443, 80) if config.serving.certificate_arn else (80,)
        # No default CIDR: a caller anywhere in the VPC would bypass the endpoint's IAM check.
        cidrs = config.serving.ingress_cidrs
        for cidr in cidrs:
            for port in self.listener_ports:
                self.load_balancer_security_group.add_ingress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), f"model server clients ({cidr})"
                )
        # By configuration only: cdk-nag EC23 here, checkov CKV_AWS_260 in docs/security.md.
        if _WORLD in cidrs:
            acknowledge(
                self.load_balancer_security_group,
                "AwsSolutions-EC23",
                f"serving.ingress_cidrs of {config.name} lists {_WORLD}: a public model endpoint "
                "by configuration; only the listener ports are open.",
            )

    def _security_group(
        self, id: str, description: str, *, allow_all_outbound: bool = True
    ) -> ec2.SecurityGroup:
        return ec2.SecurityGroup(
            self, id, vpc=self.vpc, description=description, allow_all_outbound=allow_all_outbound
        )


class NetworkStack(cdk.Stack):
    """The VPC the batch cluster and the serving service share."""

    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, flow_log_bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, id, description=f"{config.name}: network (dscloud)")
        self.network = Network(self, "Network", config=config, flow_log_bucket=flow_log_bucket)
        cdk.CfnOutput(self, "VpcId", value=self.network.vpc.vpc_id)
