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

__all__ = ["ENV", "MODES", "OTHER_MODEL", "TWO_MODEL_SHARES", "archives", "two_models"]

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


#: The control of what serving two models costs one process, whatever serves them: a
#: server without a rollout serving churn and the candidate's model under its own name,
#: its requests naming the second never, then this share of the time (``?model=``). A
#: canary is such a server (two versions, a fifth of the requests answered by the
#: second); what a canary adds beyond it is the rollout's own cost.
TWO_MODEL_SHARES = (0.0, 0.2)
#: The name the candidate's model is served under beside churn in that control.
OTHER_MODEL = "churn-retrained"


def _trained() -> tuple[Any, Any, Any]:
    """churn's model on production, the retrained candidate, and their test rows."""
    current = example.train(seed=0, rows=5000)
    retrained = example.train(seed=0, rows=5000, C=0.01)
    return current, retrained, current.X_test.dropna()


def _package(ex: Any, test: Any, name: str) -> Any:
    """``ex``'s model packaged as ``name``, with goldens from ``test``."""
    return dscloud.package(ex.estimator, test.head(200), name=name, training_data=ex.X_train)


def two_models(work: Path) -> Archive:
    """The archive of the :data:`TWO_MODEL_SHARES` control's server: churn@production
    (churn's version 1) and ``OTHER_MODEL``@production (the retrained model), no rollout."""
    current, retrained, test = _trained()
    archive = Archive.open(work / "archive-two-models")
    for ex, name in ((current, "churn"), (retrained, OTHER_MODEL)):
        dscloud.publish(_package(ex, test, name), archive)
        archive.promote(name, 1, "production", by="bench")
    return archive


def archives(work: Path) -> tuple[dict[str, Archive], dict[str, Any]]:
    """One archive per mode under ``work``: churn@1 on production, a retrained churn@2 and
    the mode's rollout; and one test row of churn (JSON values), the request's row."""
    current, retrained, test = _trained()
    artifacts = [_package(ex, test, "churn") for ex in (current, retrained)]
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
