# The scorer Lambda as a container image: the same handler and pins as the zip bundle
# (`dsc bundle lambda`), for functions that outgrow the zip or want an image pipeline.
#
# The AWS Lambda base image cannot be pulled here, so this is python:3.11-slim plus
# awslambdaric, the runtime interface client the base image carries. Lambda runs it as
#   ENTRYPOINT python -m awslambdaric   CMD dscloud.stream.handler.handler
#
# Built offline from hash-checked wheels (docs/images.md; `make images` does all of it):
#   docker/fetch-wheels.sh
#   buildah bud --format docker --pull=never --ignorefile docker/lambda.Dockerfile.dockerignore \
#       -f docker/lambda.Dockerfile -t dsc-lambda .
# Configure with the same environment as the zip: DSC_ARCHIVE, DSC_MODELS,
# DSC_PREDICTIONS_TABLE, DSC_REJECTS_QUEUE_URL, DSC_REFRESH_SECONDS (dscloud.settings).

FROM python:3.11-slim AS build
WORKDIR /src
COPY wheels/ /wheels/
COPY docker/requirements-lambda-image.lock docker/
# pip from a throwaway venv: the locally made base image has no pip on PATH. The locked
# packages first, the runtime after: a code change rebuilds only the last step.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        --require-hashes --target /var/task -r docker/requirements-lambda-image.lock
COPY runtime/ runtime/
RUN /opt/build/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps \
        --target /var/task ./runtime \
    && rm -rf /var/task/bin \
    && python3 -c "import pathlib, sys; bad = [p for p in ('sklearn', 'skl2onnx', 'pandas') if pathlib.Path('/var/task', p).exists()]; sys.exit(f'training libraries in the image: {bad}' if bad else 0)"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin dsc
COPY --from=build /var/task /var/task
WORKDIR /var/task
# ORT_DISABLE_TELEMETRY: ONNX Runtime (1.29 and later) otherwise uploads usage events.
ENV PYTHONPATH=/var/task \
    ORT_DISABLE_TELEMETRY=1 \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POWERTOOLS_SERVICE_NAME=dscloud-stream \
    POWERTOOLS_METRICS_NAMESPACE=dscloud
USER 10001
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["dscloud.stream.handler.handler"]
