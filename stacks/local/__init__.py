"""The local target: one environment deployed into a moto server and run (docs/local.md)."""
