# The serving container: dscloud[serve] on a slim Python, ONNX Runtime and no scikit-learn.
# Speaks the Open Inference Protocol v2 and SageMaker's container contract on port 8080.
#
# Built offline from hash-checked wheels (docs/images.md; `make images` does all of it):
#   docker/fetch-wheels.sh
#   buildah bud --format docker --pull=never --ignorefile docker/serving.Dockerfile.dockerignore \
#       -f docker/serving.Dockerfile -t dsc-serving .
# --format docker keeps the HEALTHCHECK (the OCI format drops it with only a warning).
# Run: the models come from DSC_MODELS and DSC_ARCHIVE (a directory or s3://BUCKET/PREFIX),
# or SageMaker's /opt/ml/model when DSC_MODELS is empty.

FROM python:3.11-slim AS build
WORKDIR /src
COPY wheels/ /wheels/
COPY docker/requirements-serving.lock docker/
# The locked packages first, the runtime after: a code change rebuilds only the last step.
RUN python3 -m venv /opt/dsc \
    && /opt/dsc/bin/pip install --no-cache-dir --no-index --find-links /wheels --require-hashes \
        -r docker/requirements-serving.lock
COPY runtime/ runtime/
RUN /opt/dsc/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps ./runtime \
    && /opt/dsc/bin/pip uninstall --yes --quiet pip

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin dsc
COPY --from=build /opt/dsc /opt/dsc
COPY --chmod=0755 docker/serve /usr/local/bin/serve
# ORT_DISABLE_TELEMETRY: ONNX Runtime (1.29 and later) otherwise uploads usage events and
# writes a device id under $HOME; a serving task has no business calling out.
ENV PATH=/opt/dsc/bin:$PATH \
    ORT_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DSC_HOST=0.0.0.0 \
    DSC_PORT=8080 \
    DSC_WORKERS=1 \
    DSC_ARCHIVE=/opt/ml/archive
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2)"]
# SageMaker runs `docker run IMAGE serve`; ECS runs the same command.
CMD ["serve"]
