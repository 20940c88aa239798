#!/usr/bin/env bash
# Download every wheel the images install into ./wheels (gitignored), so they build without
# network: serving, batch, the Lambda container image, and the build backend for ./runtime.
# Each comes from a committed lock (docker/requirements-*.lock, made by docker/lock.py) and
# is checked against its sha256 (--require-hashes): a different file is refused.
# Run from the repository root; `make images` runs it. PIP: the pip to use (default: the
# project venv's, created here if missing so that a fresh clone works).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PIP:-}" ]; then
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  PIP=.venv/bin/pip
fi
mkdir -p wheels
for lock in docker/requirements-serving.lock docker/requirements-batch.lock \
    docker/requirements-lambda-image.lock docker/requirements-build.lock; do
  "$PIP" download --quiet --require-hashes --only-binary=:all: --implementation cp \
      --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_28_x86_64 -r "$lock" -d wheels/
done
echo "wheels/: $(find wheels -name '*.whl' | wc -l) wheels, $(du -sh wheels | cut -f1)"
