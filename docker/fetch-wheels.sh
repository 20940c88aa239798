#!/usr/bin/env bash
# Download every wheel the images install into ./wheels (gitignored), so they build without
# network: serving, batch and the Lambda container image. Run from the repository root.
set -euo pipefail
pip=${PIP:-.venv/bin/pip}
for requirements in docker/requirements-serving.txt docker/requirements-batch.txt \
    docker/requirements-lambda-image.txt; do
  "$pip" download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp \
      -r "$requirements" "setuptools>=68" wheel -d wheels/
done
ls wheels | wc -l
