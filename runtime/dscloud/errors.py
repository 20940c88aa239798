"""One error hierarchy for the whole runtime.

Every error a user or a client can cause is a :class:`DscError`. Each carries an HTTP
``status`` and a message that says what was wrong and what to do; the server, the Lambda
handler and the CLI each map the tree in exactly one place::

    DscError
    ├── ConfigError                 bad settings or arguments (exit 2)
    ├── DataError                   batch input or output that cannot be read or written
    ├── ArchiveError                the archive cannot be read or written (incl. file modes)
    │   ├── NotFoundError           unknown model, version or alias (404)
    │   ├── VersionExistsError      publishing over an existing version (409)
    │   ├── ArtifactIntegrityError  sha256 mismatch, an envelope that is not the version
    │   │                           asked for, an alias whose sha256 disagrees
    │   └── RolloutError            a rollout refused or in the wrong state (409)
    ├── EnvelopeError               an envelope.json that is not a valid envelope
    ├── ExportError                 a model that cannot be packaged
    │   └── ParityError             ONNX and the original estimator disagree
    ├── ModelLoadError              ONNX Runtime cannot load the model bytes
    ├── GoldenMismatchError         a runtime reproduces the golden examples differently
    ├── SchemaError                 input that does not match the model's schema (400)
    │   └── PayloadError            a request body that cannot be decoded at all (400)
    │       ├── PayloadTooLargeError    a body above the configured limit (413)
    │       └── UnsupportedMediaError   a content type no decoder speaks (415)
    ├── NotReadyError               no verified model is loaded yet (503)
    └── EndpointError               a remote endpoint answered with an error (its status)
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ArtifactIntegrityError",
    "ConfigError",
    "DataError",
    "DscError",
    "EndpointError",
    "EnvelopeError",
    "ExportError",
    "GoldenMismatchError",
    "ModelLoadError",
    "NotFoundError",
    "NotReadyError",
    "ParityError",
    "PayloadError",
    "PayloadTooLargeError",
    "RolloutError",
    "SchemaError",
    "UnsupportedMediaError",
    "VersionExistsError",
    "aws_error_code",
]


class DscError(Exception):
    """Base of every runtime error. ``status`` is the HTTP status an adapter answers with."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(DscError):
    status = 400
    exit_code = 2


class DataError(DscError):
    """Batch input or output data could not be read or written; the message names the URI."""

    status = 500


class ArchiveError(DscError):
    status = 500


class NotFoundError(ArchiveError):
    status = 404


class VersionExistsError(ArchiveError):
    status = 409


class ArtifactIntegrityError(ArchiveError):
    """The bytes in the archive are not the bytes that were published."""

    status = 500

    def __init__(
        self,
        *,
        path: str,
        expected: str,
        actual: str,
        what: str = "sha256",
        source: str = "the envelope records",
        remedy: str = "Re-publish it.",
    ) -> None:
        super().__init__(
            f"{path}: {what} is {actual}, {source} {expected}; the artifact was "
            f"modified or truncated after publishing and will not be loaded. {remedy}"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class RolloutError(ArchiveError):
    """A rollout that cannot start, change, promote or abort; the message says why."""

    status = 409


class EnvelopeError(DscError):
    status = 500


class ExportError(DscError):
    status = 400


class ParityError(ExportError):
    """ONNX scores differ from the estimator beyond tolerance; carries the full report."""

    def __init__(self, message: str, report: dict[str, object]) -> None:
        super().__init__(message)
        self.report = report


class ModelLoadError(DscError):
    """The bytes verify but ONNX Runtime refuses them (a corrupt or unsupported graph)."""

    status = 500


class GoldenMismatchError(DscError):
    status = 500


class SchemaError(DscError):
    """Input does not match the model's schema. ``field`` names the offending column."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.row = row


class PayloadError(SchemaError):
    """The request body could not be decoded (malformed JSON, wrong shape, too large)."""


class PayloadTooLargeError(PayloadError):
    """The body is larger than the adapter accepts (``DSC_MAX_BODY_BYTES`` for the server)."""

    status = 413


class UnsupportedMediaError(PayloadError):
    """The body's content type is not one the adapter can decode."""

    status = 415


class NotReadyError(DscError):
    status = 503


class EndpointError(DscError):
    """A dscloud endpoint called by :mod:`dscloud.client` answered ``status`` >= 400.

    ``status`` is the endpoint's own (403 for a refused signature, 400 for bad input, ...);
    ``body`` keeps the answer as received.
    """

    def __init__(self, status: int, message: str, *, body: bytes = b"") -> None:
        super().__init__(f"the endpoint answered {status}: {message}")
        self.status = status
        self.body = body


def aws_error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else).

    Duck-typed on ``exc.response`` so that the core need not import botocore to read it.
    """
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
