"""The HTTP adapter: Open Inference Protocol v2 and SageMaker ``/invocations`` on uvicorn.

``dsc serve NAME@REF ...`` runs it; :func:`create_app` builds the ASGI app for tests or
another ASGI server, :func:`app_from_env` is the factory uvicorn workers import.
"""

from __future__ import annotations

from dscloud.server.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
