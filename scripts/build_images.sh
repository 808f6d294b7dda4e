#!/usr/bin/env bash
# Builds the four service images (services/*/Dockerfile) from the repository root when a working
# container engine (docker or podman) is here; without one it says so and exits 0
# (REQUIRE_ENGINE=1 makes that an error, as the promotion workflow does).
#   bash scripts/build_images.sh [service ...]        (task infra:images -- [service ...])
# Environment:
#   IMAGE_REGISTRY  image name prefix (default "finpredict": finpredict/<service>:<tag>)
#   IMAGE_TAG       tag (default: the workspace version in pyproject.toml, e.g. 0.1.0)
#   PUSH=1          push each image and record its digest in dist/images.txt
#                   ("finpredict/<service>=<registry>/<service>@sha256:..."), which
#                   infra/k8s/deploy.sh pins the manifests to.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
    engine="$candidate"
    break
  fi
done
if [ -z "$engine" ]; then
  msg="build_images: no working container engine (docker or podman); image builds skipped"
  if [ "${REQUIRE_ENGINE:-0}" = "1" ]; then
    echo "$msg" >&2
    exit 1
  fi
  echo "$msg"
  exit 0
fi

registry="${IMAGE_REGISTRY:-finpredict}"
tag="${IMAGE_TAG:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
services=(gateway registry monitor model-server console)
if [ $# -gt 0 ]; then services=("$@"); fi

if [ "${PUSH:-0}" = "1" ]; then
  mkdir -p dist
  : >dist/images.txt
fi
for svc in "${services[@]}"; do
  if [ ! -f "services/$svc/Dockerfile" ]; then
    echo "build_images: no services/$svc/Dockerfile" >&2
    exit 1
  fi
  image="$registry/$svc:$tag"
  echo "build_images: $engine build $image"
  DOCKER_BUILDKIT=1 "$engine" build -f "services/$svc/Dockerfile" -t "$image" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.version=$tag" .
  if [ "${PUSH:-0}" = "1" ]; then
    "$engine" push "$image"
    digest="$("$engine" inspect --format '{{index .RepoDigests 0}}' "$image")"
    echo "finpredict/$svc=$digest" >>dist/images.txt
  fi
done
