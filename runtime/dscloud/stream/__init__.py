"""The stream adapter: Kinesis batches scored by a Lambda handler, and a local runner.

- :mod:`dscloud.stream.handler`: ``handler(event, context)``, the Lambda entry point
- :mod:`dscloud.stream.records`: the record format
- :mod:`dscloud.stream.sinks`: the predictions table, the rejects queue, the output stream
- :mod:`dscloud.stream.runner`: ``dsc stream run``, Lambda's Kinesis event source mapping
  emulated on a laptop (no Powertools needed)
- :mod:`dscloud.stream.bundle`: ``dsc bundle lambda``, the docker-free Lambda zip

Nothing is imported here, so the runner and the bundler stay importable without the
handler's dependencies.
"""

from __future__ import annotations

__all__: list[str] = []
