"""The rollouts both rollout-cost benchmarks compare, built once for both:
``bench/serve.py --rollout-cost`` (servers over sockets) and ``bench/hotpath.py --rollout``
(the app in process) serve the same models, the same one-row request and the same modes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dscloud
from dscloud import example, rollout
from dscloud.archive import Archive

__all__ = ["ENV", "MODES", "archives"]

#: Each mode's rollout of churn@2 behind churn@production ({}: none).
MODES: dict[str, dict[str, Any]] = {
    "none": {},
    "none (A/A control)": {},
    "canary 0%": {"mode": "canary", "share": 0.0},
    "canary 20%": {"mode": "canary", "share": 0.2},
    "canary 20%, not compared": {"mode": "canary", "share": 0.2},
    "shadow": {"mode": "shadow"},
}
#: What a mode's server reads besides its archive: the control of what comparing costs a
#: canary is the same routing with no comparison.
ENV: dict[str, dict[str, str]] = {"canary 20%, not compared": {"DSC_ROLLOUT_COMPARE_SHARE": "0"}}


def archives(work: Path) -> tuple[dict[str, Archive], dict[str, Any]]:
    """One archive per mode under ``work``: churn@1 on production, a retrained churn@2 and
    the mode's rollout; and one test row of churn (JSON values), the request's row."""
    current = example.train(seed=0, rows=5000)
    retrained = example.train(seed=0, rows=5000, C=0.01)
    test = current.X_test.dropna()
    artifacts = [
        dscloud.package(ex.estimator, test.head(200), name="churn", training_data=ex.X_train)
        for ex in (current, retrained)
    ]
    row = {
        c: (v.item() if hasattr(v, "item") else v)
        for c, v in test[example.FEATURES].iloc[0].items()
    }
    built = {}
    for i, (mode, start) in enumerate(MODES.items()):
        archive = Archive.open(work / f"archive-{i}")
        for artifact in artifacts:
            dscloud.publish(artifact, archive)
        archive.promote("churn", 1, "production", by="bench")
        if start:
            rollout.start(archive, "churn", "production", 2, by="bench", **start)
        built[mode] = archive
    return built, row
