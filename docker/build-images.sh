#!/usr/bin/env bash
# Build the three images offline from ./wheels (docker/fetch-wheels.sh) and print each one's
# size and build time. `make images` runs it after installing podman/buildah, making the
# base image and fetching the wheels. Run from the repository root with the container
# settings sourced (`. ../shared/containers/env.sh`).
# --format docker: the OCI format has no HEALTHCHECK, and buildah drops it with a warning.
# --layers: an unchanged step is reused from the last build (the base and wheel layers).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
report=()
for image in serving batch lambda; do
  start=$(date +%s)
  buildah bud --quiet --format docker --layers --pull=never \
      --ignorefile "docker/$image.Dockerfile.dockerignore" --build-arg "GIT_COMMIT=$commit" \
      -f "docker/$image.Dockerfile" -t "dsc-$image" . >/dev/null
  seconds=$(( $(date +%s) - start ))
  bytes=$(podman image inspect --format '{{.Size}}' "dsc-$image")
  report+=("$(printf 'dsc-%-8s %5d MB  built in %3d s' "$image" $(( bytes / 1000000 )) "$seconds")")
done
printf '%s\n' "${report[@]}"
