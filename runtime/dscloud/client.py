"""A client for a dscloud endpoint: every request signed with AWS Signature Version 4.

The deployed endpoint (stacks/endpoint.py, `SignedEndpoint`) is an API Gateway HTTP API that
admits only requests signed for the ``execute-api`` service by an IAM principal allowed
``execute-api:Invoke`` on it. This module signs with botocore's own signer (``SigV4Auth``
over an ``AWSRequest``), from the credentials of a botocore or boto3 session (environment,
profile, SSO, instance or task role: whatever the session resolves), and sends with the
standard library, so it needs nothing but botocore (the ``client`` extra)::

    from dscloud.client import EndpointClient
    endpoint = EndpointClient("https://abc123.execute-api.eu-west-1.amazonaws.com")
    answer = endpoint.invocations(b'{"dataframe_records": [...]}', model="churn")
    answer.json()

A local ``dsc serve`` is open on 127.0.0.1; ``EndpointClient(url, sign=False)`` calls it
without credentials. An answer with a status of 400 or more raises
:class:`~dscloud.errors.EndpointError` carrying the status and the endpoint's message
(API Gateway's ``{"message": "Forbidden"}`` for a refused signature, the server's
``{"error": ...}`` otherwise).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol

from dscloud.errors import ConfigError, EndpointError

__all__ = ["SERVICE", "Answer", "CredentialSource", "EndpointClient", "region_of"]

SERVICE = "execute-api"
# https://{api-id}.execute-api.{region}.amazonaws.com[.cn]/...
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class CredentialSource(Protocol):
    """What the client needs of a session: botocore's and boto3's sessions both qualify."""

    def get_credentials(self) -> Any: ...


@dataclass(frozen=True)
class Answer:
    """One answer of the endpoint: status, headers (lower-case names) and the raw body."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return json.loads(self.body)


def region_of(url: str) -> str | None:
    """The AWS region in an ``execute-api`` default endpoint URL, or None for any other host."""
    host = urllib.parse.urlsplit(url).hostname or ""
    match = _EXECUTE_API_HOST.match(host)
    return match.group(1) if match else None


class EndpointClient:
    """Signed (or, for a local server, unsigned) calls to a dscloud endpoint at ``url``.

    ``session`` supplies credentials (default: a new botocore session, which reads the
    environment, ``AWS_PROFILE`` and the instance or task role); ``region`` defaults to the
    one in an ``execute-api`` URL, then the session's. Raises ConfigError when botocore is
    missing, no credentials resolve, or no region is known.
    """

    def __init__(
        self,
        url: str,
        *,
        session: CredentialSource | None = None,
        region: str | None = None,
        sign: bool = True,
        timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"endpoint URL {url!r}: expected http(s)://HOST[:PORT][/PATH]")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._signer: _Signer | None = None
        if sign:
            self._signer = _Signer.from_session(session, region or region_of(url))

    def invocations(
        self, body: bytes, *, model: str | None = None, content_type: str = "application/json"
    ) -> Answer:
        """POST ``body`` to ``/invocations`` (``?model=NAME`` when given); returns the Answer.

        Raises EndpointError for an answer of 400 or more, ConfigError if unreachable.
        """
        query = {"model": model} if model else None
        return self.request("POST", "/invocations", body, content_type=content_type, query=query)

    def infer(self, model: str, payload: dict[str, Any]) -> Answer:
        """POST an Open Inference Protocol v2 request to ``/v2/models/{model}/infer``."""
        path = f"/v2/models/{urllib.parse.quote(model, safe='')}/infer"
        return self.request(
            "POST", path, json.dumps(payload).encode(), content_type="application/json"
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request (signed unless ``sign=False``); returns the Answer.

        Raises EndpointError for a status of 400 or more, ConfigError when the endpoint
        cannot be reached.
        """
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": content_type} if content_type else {}
        if self._signer is not None:
            headers = self._signer.sign(method, url, body, headers)
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return Answer(response.status, response.read(), _lower(response.headers))
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, exc.read(), _lower(exc.headers))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"cannot reach {url}: {reason}") from exc
        raise EndpointError(answer.status, _message(answer), body=answer.body)


class _Signer:
    """SigV4 for ``execute-api`` with the session's current (refreshed) credentials."""

    def __init__(self, credentials: Any, region: str) -> None:
        self.credentials = credentials
        self.region = region

    @classmethod
    def from_session(cls, session: CredentialSource | None, region: str | None) -> _Signer:
        try:
            import botocore.session
        except ImportError as exc:  # the `client` extra is not installed
            raise ConfigError(
                "signing requests needs botocore: pip install 'dscloud[client]'"
            ) from exc
        if session is None:
            session = botocore.session.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigError(
                "no AWS credentials found to sign the request: set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role"
            )
        region = region or _session_region(session)
        if not region:
            raise ConfigError(
                "no AWS region to sign for: the URL is not an execute-api default endpoint, "
                "so pass the region (--region, AWS_DEFAULT_REGION or the profile's region)"
            )
        return cls(credentials, region)

    def sign(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> dict[str, str]:
        """The headers to send: ``headers`` plus Host, X-Amz-Date, Authorization (and token)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        # Frozen once per request: a refreshing credential cannot change between the key id
        # and the secret the signature uses.
        SigV4Auth(self.credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())


def _session_region(session: CredentialSource) -> str | None:
    region = getattr(session, "region_name", None)  # boto3.Session
    if region is None and hasattr(session, "get_config_variable"):  # botocore Session
        region = session.get_config_variable("region")
    return str(region) if region else None


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()} if headers else {}


def _message(answer: Answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)
    return str(body)
