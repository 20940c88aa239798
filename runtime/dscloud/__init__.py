"""dscloud: ONNX models in an envelope, an archive of immutable versions, one scoring core.

The public surface::

    artifact = dscloud.package(estimator, X_sample, name="churn", ...)   # needs [export]
    envelope = dscloud.publish(artifact, archive=".dsc/archive")
    scorer = dscloud.Scorer(dscloud.Archive.open().load("churn@production"))

``package`` is imported lazily so that the serving image and the Lambda bundle, which
carry no scikit-learn, can import ``dscloud``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dscloud.archive import Archive, Ref
from dscloud.envelope import Artifact, Envelope
from dscloud.errors import DscError
from dscloud.scorer import Predictions, Scorer
from dscloud.version import __version__

if TYPE_CHECKING:
    from dscloud.export import Tolerance, package

__all__ = [
    "Archive",
    "Artifact",
    "DscError",
    "Envelope",
    "Predictions",
    "Ref",
    "Scorer",
    "Tolerance",
    "__version__",
    "package",
    "publish",
]


def publish(
    artifact: Artifact,
    archive: Archive | str | os.PathLike[str] | None = None,
    *,
    without_goldens: str | None = None,
) -> Envelope:
    """Publish ``artifact`` as the next version in ``archive`` (default: ``DSC_ARCHIVE`` or
    ``.dsc/archive``); returns the envelope with its version number.

    An artifact without golden examples is refused unless ``without_goldens`` gives the
    reason, which is recorded (see :meth:`Archive.publish`)."""
    if not isinstance(archive, Archive):
        archive = Archive.open(archive if archive is not None else os.environ.get("DSC_ARCHIVE"))
    return archive.publish(artifact.envelope, artifact.model, without_goldens=without_goldens)


def __getattr__(name: str) -> Any:
    if name in {"package", "Tolerance"}:
        from dscloud import export

        return getattr(export, name)
    raise AttributeError(f"module 'dscloud' has no attribute {name!r}")
