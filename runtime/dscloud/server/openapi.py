"""The OpenAPI 3.1 document served at ``GET /openapi.json``, written by hand.

Written rather than generated (no pydantic on the hot path): the routes of
:mod:`dscloud.server.app` and the paths here are checked against each other in the tests.
The model names of this process are filled in, so a client sees what it can call.
"""

from __future__ import annotations

from typing import Any

from dscloud.schema import OUTPUT_KINDS
from dscloud.server.invocations import INVOCATION_FORMATS
from dscloud.server.oip import OIP_DATATYPES
from dscloud.version import __version__

__all__ = ["openapi"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "The input does not fit the model's schema, or is malformed"),
    "404": _json(_ref("Error"), "No such model or version here"),
    "413": _json(_ref("Error"), "The body is larger than DSC_MAX_BODY_BYTES"),
}
_MODEL_HEADERS = {
    "X-Model-Name": {"schema": {"type": "string"}, "description": "model that answered"},
    "X-Model-Version": {"schema": {"type": "string"}, "description": "its version"},
    "X-Model-Sha256": {"schema": {"type": "string"}, "description": "sha256 of model.onnx"},
}


def _model_param(models: list[str]) -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": models},
    }


_VERSION_PARAM = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _infer_op(models: list[str], *, versioned: bool) -> dict[str, Any]:
    params = [_model_param(models)] + ([_VERSION_PARAM] if versioned else [])
    ok = _json(_ref("InferResponse"), "Predictions, one output tensor per kind")
    ok["headers"] = _MODEL_HEADERS
    return {
        "post": {
            "summary": "Score rows (Open Inference Protocol v2)",
            "operationId": "infer_version" if versioned else "infer",
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("InferRequest")}},
            },
            "responses": {"200": ok, **_ERRORS},
        }
    }


def _metadata_op(models: list[str], *, versioned: bool) -> dict[str, Any]:
    params = [_model_param(models)] + ([_VERSION_PARAM] if versioned else [])
    return {
        "get": {
            "summary": "Model metadata: inputs, outputs, version, sha256, envelope identity",
            "operationId": "model_metadata_version" if versioned else "model_metadata",
            "parameters": params,
            "responses": {
                "200": _json(_ref("ModelMetadata"), "Model metadata"),
                "404": _ERRORS["404"],
            },
        }
    }


def _ready_op(models: list[str], *, versioned: bool) -> dict[str, Any]:
    params = [_model_param(models)] + ([_VERSION_PARAM] if versioned else [])
    return {
        "get": {
            "summary": "Whether the model is loaded and verified",
            "operationId": "model_ready_version" if versioned else "model_ready",
            "parameters": params,
            "responses": {
                "200": _json(_ref("Ready"), "Ready"),
                "404": _ERRORS["404"],
            },
        }
    }


def _drift_op(models: list[str], *, versioned: bool) -> dict[str, Any]:
    params = [_model_param(models)] + ([_VERSION_PARAM] if versioned else [])
    return {
        "get": {
            "summary": "Drift against the training baseline over the rolling window: PSI per "
            "feature and for the predictions, ranked (< 0.1 stable, 0.1 to 0.25 moderate, "
            "> 0.25 major); docs/monitoring.md",
            "operationId": "model_drift_version" if versioned else "model_drift",
            "parameters": params,
            "responses": {
                "200": _json({"type": "object"}, "The drift report"),
                "404": _ERRORS["404"],
            },
        }
    }


def _health(summary: str, op: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "operationId": op,
            "responses": {"200": _json(_ref("Ready"), "Healthy")},
        }
    }


_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "description": "a column of the model's schema"},
        "shape": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "[n] or [n, 1] per column; [n, k] for a model's single matrix input",
        },
        "datatype": {"type": "string", "enum": list(OIP_DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "row-major values, flat or nested"},
    },
}
_TENSOR_OUT = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "enum": list(OUTPUT_KINDS)},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object", "properties": {"classes": {"type": "array"}}},
        "data": {"type": "array"},
    },
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what was wrong and what was expected"},
            "field": {"type": ["string", "null"], "description": "the offending column"},
            "row": {"type": ["integer", "null"]},
            "expected": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "the model's schema: column -> what it accepts",
            },
        },
    },
    "Ready": {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}, "live": {"type": "boolean"}},
    },
    "ServerMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "models": {"type": "array", "items": _ref("Model")},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"type": "object"}},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "parameters": {"type": "object", "description": "sha256, envelope identity, schema"},
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
            "outputs": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"sha256": {"type": "string"}}},
            "outputs": {"type": "array", "items": _TENSOR_OUT},
        },
    },
    "Invocation": {
        "description": "Exactly one of the four layouts MLflow's scoring server accepts.",
        "oneOf": [
            {
                "type": "object",
                "required": ["dataframe_split"],
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["columns", "data"],
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array"}},
                            "index": {"type": "array"},
                        },
                    }
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["dataframe_records"],
                "properties": {"dataframe_records": {"type": "array", "items": {"type": "object"}}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["instances"],
                "properties": {
                    "instances": {
                        "type": "array",
                        "description": "row objects, or rows as lists in schema order",
                    }
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "description": "{column: [values]}, or rows like instances",
                        "type": ["object", "array"],
                    }
                },
                "additionalProperties": False,
            },
        ],
    },
    "InvocationResponse": {
        "type": "object",
        "required": ["predictions", "model"],
        "properties": {
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {},
                        "probabilities": {"type": "array", "items": {"type": "number"}},
                        "value": {"type": "number"},
                    },
                },
            },
            "model": _ref("Model"),
        },
    },
    "Model": {
        "type": "object",
        "description": "which model answered (dscloud.envelope.ModelIdentity)",
        "required": ["name", "version", "sha256"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": ["integer", "null"]},
            "sha256": {"type": "string", "description": "sha256 of model.onnx"},
        },
    },
}


def openapi(models: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server of ``models``."""
    invocations_ok = _json(_ref("InvocationResponse"), "One prediction per row, in order")
    invocations_ok["headers"] = _MODEL_HEADERS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dscloud model server",
            "version": __version__,
            "description": (
                "Serves ONNX models from a dscloud archive. Every answer names the model, "
                "its version and the sha256 of model.onnx. Two protocols: the Open Inference "
                "Protocol v2 (KServe, Triton, MLServer) and the SageMaker / MLflow container "
                "contract (/ping, /invocations). When several models are served, choose the "
                "one /invocations scores with ?model=NAME or the X-Dsc-Model header."
            ),
        },
        "paths": {
            "/v2": {
                "get": {
                    "summary": "Server metadata and the models served",
                    "operationId": "server_metadata",
                    "responses": {"200": _json(_ref("ServerMetadata"), "Server metadata")},
                }
            },
            "/v2/health/live": _health("The process is up", "health_live"),
            "/v2/health/ready": _health("Every model is loaded and verified", "health_ready"),
            "/v2/models/{name}": _metadata_op(models, versioned=False),
            "/v2/models/{name}/versions/{version}": _metadata_op(models, versioned=True),
            "/v2/models/{name}/ready": _ready_op(models, versioned=False),
            "/v2/models/{name}/versions/{version}/ready": _ready_op(models, versioned=True),
            "/v2/models/{name}/drift": _drift_op(models, versioned=False),
            "/v2/models/{name}/versions/{version}/drift": _drift_op(models, versioned=True),
            "/v2/models/{name}/infer": _infer_op(models, versioned=False),
            "/v2/models/{name}/versions/{version}/infer": _infer_op(models, versioned=True),
            "/ping": _health("SageMaker health check", "ping"),
            "/invocations": {
                "post": {
                    "summary": "Score rows (SageMaker / MLflow scoring contract)",
                    "operationId": "invocations",
                    "parameters": [
                        {
                            "name": "model",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": models},
                            "description": "which model, when several are served",
                        },
                        {
                            "name": "X-Dsc-Model",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "enum": models},
                            "description": "which model, when several are served",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("Invocation")},
                            "text/csv": {
                                "schema": {"type": "string"},
                                "example": "tenure_months,plan\n12,basic\n",
                            },
                        },
                    },
                    "responses": {
                        "200": invocations_ok,
                        **_ERRORS,
                        "415": _json(_ref("Error"), "Neither JSON nor CSV"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text: request counts and latency by model and version, "
                    "drift (PSI, out-of-range, unseen, missing) by feature",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
        "x-invocation-formats": list(INVOCATION_FORMATS),
    }
