#!/usr/bin/env bash
# Download every wheel the serving image installs into ./wheels (gitignored), so the image
# builds without network. Run from the repository root with a Python 3.11 pip.
set -euo pipefail
pip=${PIP:-.venv/bin/pip}
"$pip" download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp \
    -r docker/requirements-serving.txt "setuptools>=68" wheel -d wheels/
ls wheels | wc -l
