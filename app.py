#!/usr/bin/env python3
"""The CDK app: cdk.json context -> typed config -> one Stage per team x stage.

`npx cdk synth --all` (or `make synth`) runs this. The `dscloud` context is read here once
and validated; a bad value stops synth with a message naming the key and its valid values.

The local target: with `-c dscloud:local=dsc-recs-dev`, only that environment is built, as
`stacks.config.local_environment` adapts it for a moto server (`make local`, docs/local.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk

from stacks.assets import AssetSources, LambdaBundleError
from stacks.config import (
    CONTEXT_KEY,
    LOCAL_CONTEXT_KEY,
    ConfigError,
    PlatformConfig,
    load_config,
    local_environment,
)
from stacks.platform import build_platform

REPO_ROOT = Path(__file__).resolve().parent


def main() -> None:
    """Build and synthesize every environment; exits with status 1 on a configuration error."""
    app = cdk.App()
    try:
        config = load_config(app.node.try_get_context(CONTEXT_KEY))
        local = app.node.try_get_context(LOCAL_CONTEXT_KEY)
        if local:
            config = PlatformConfig(environments=(local_environment(config, local),))
        assets = AssetSources.from_environ(REPO_ROOT, os.environ)
    except (ConfigError, LambdaBundleError) as error:
        sys.exit(f"cdk.json: {error}")
    build_platform(app, config, assets)
    app.synth()


if __name__ == "__main__":
    main()
