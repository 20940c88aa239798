"""One CDK Stage per team x stage, `dsc-{team}-{stage}`, each a complete ML environment.

A Stage holds five stacks, deployed together with `cdk deploy 'dsc-recs-dev/*'`:

    Archive  <- Network  <- Batch -> Online (its alarms topic)
        ^         ^
        +---------+------- Serving
        +----------------- Online

Every resource is tagged with its team and stage, and cdk-nag's AwsSolutions pack checks
every stack at synth.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.archive import ArchiveStack
from stacks.assets import AssetSources
from stacks.batch import BatchStack
from stacks.compliance import add_checks
from stacks.config import EnvironmentConfig, PlatformConfig
from stacks.network import NetworkStack
from stacks.online import OnlineStack
from stacks.serving import ServingStack

__all__ = ["TeamEnvironment", "build_platform"]


class TeamEnvironment(cdk.Stage):
    """The archive, network, batch, online and serving stacks of one team environment."""

    def __init__(
        self, scope: Construct, *, config: EnvironmentConfig, assets: AssetSources
    ) -> None:
        super().__init__(
            scope,
            config.name,
            env=cdk.Environment(account=config.account, region=config.region),
        )
        self.config = config
        # Per environment, not app-wide: moto resolves only strong references (exports).
        strength = {"weak": cdk.ReferenceStrength.WEAK, "strong": cdk.ReferenceStrength.STRONG}
        cdk.CrossStackReferences.of(self).consume(strength[config.cross_stack_references])
        self.archive = ArchiveStack(self, "Archive", config=config)
        archive = self.archive.archive
        self.network = NetworkStack(
            self, "Network", config=config, flow_log_bucket=archive.log_bucket
        )
        network = self.network.network
        self.online = OnlineStack(self, "Online", config=config, archive=archive, assets=assets)
        self.batch = BatchStack(
            self,
            "Batch",
            config=config,
            network=network,
            archive=archive,
            assets=assets,
            alarm_topic=self.online.online.alarm_topic,
        )
        self.serving = ServingStack(
            self, "Serving", config=config, network=network, archive=archive, assets=assets
        )
        tags = cdk.Tags.of(self)
        tags.add("team", config.team)
        tags.add("stage", config.stage)
        tags.add("dscloud:environment", config.name)

    @property
    def stacks(self) -> tuple[cdk.Stack, ...]:
        """The environment's stacks, in deployment order."""
        return (self.archive, self.network, self.online, self.batch, self.serving)


def build_platform(
    app: cdk.App, config: PlatformConfig, assets: AssetSources
) -> list[TeamEnvironment]:
    """Add one TeamEnvironment per configured environment to `app`, with cdk-nag checks on."""
    add_checks(app)
    return [TeamEnvironment(app, config=env, assets=assets) for env in config.environments]
