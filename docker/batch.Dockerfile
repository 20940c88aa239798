# The batch image: array-job scoring (`dsc score`) and training jobs (examples/train_churn.py).
# Carries pyarrow and, for training, scikit-learn/skl2onnx/pandas (dscloud[batch,export]).
#
# Built offline from hash-checked wheels (docs/images.md; `make images` does all of it):
#   docker/fetch-wheels.sh
#   buildah bud --format docker --pull=never --ignorefile docker/batch.Dockerfile.dockerignore \
#       --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -f docker/batch.Dockerfile -t dsc-batch .
#
# Scoring, one child of an AWS Batch array job of N (the job definition sets DSC_SHARD_COUNT;
# AWS Batch sets AWS_BATCH_JOB_ARRAY_INDEX):
#   dsc score churn@production --input s3://data/users/ --output s3://scores/2026-11-25/
# Training (prints the published version, e.g. churn@7):
#   python /opt/dsc/examples/train_churn.py --data s3://data/churn/ --promote staging
# Both read DSC_ARCHIVE (s3://BUCKET/PREFIX) and use the task role's credentials.

FROM python:3.11-slim AS build
WORKDIR /src
COPY wheels/ /wheels/
COPY docker/requirements-batch.lock docker/
# The locked packages first, the runtime after: a code change rebuilds only the last step.
RUN python3 -m venv /opt/dsc \
    && /opt/dsc/bin/pip install --no-cache-dir --no-index --find-links /wheels --require-hashes \
        -r docker/requirements-batch.lock
COPY runtime/ runtime/
RUN /opt/dsc/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps ./runtime \
    && /opt/dsc/bin/pip uninstall --yes --quiet pip

FROM python:3.11-slim
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision=$GIT_COMMIT \
      org.opencontainers.image.title="dscloud batch: scoring and training jobs"
RUN useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin dsc
COPY --from=build /opt/dsc /opt/dsc
COPY examples/train_churn.py /opt/dsc/examples/train_churn.py
# ORT_DISABLE_TELEMETRY: ONNX Runtime (1.29 and later) otherwise uploads usage events.
ENV PATH=/opt/dsc/bin:$PATH \
    ORT_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DSC_GIT_COMMIT=$GIT_COMMIT \
    DSC_ARCHIVE=/tmp/archive \
    DSC_SHARD_COUNT=1 \
    DSC_WORKERS=1 \
    DSC_THREADS=1
WORKDIR /tmp
USER 10001
# No ENTRYPOINT: an AWS Batch job definition overrides CMD only, and training runs python.
CMD ["dsc", "--help"]
