"""The dscloud platform in CDK: one environment per team x stage.

`config` turns the `dscloud` block of cdk.json context into frozen, validated dataclasses
(pure Python, no CDK import, so `python -m stacks.team_add` stays fast). `platform` builds
one CDK Stage per environment from them; each Stage holds the Archive, Network, Batch,
Online and Serving stacks.
"""
