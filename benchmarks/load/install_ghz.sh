#!/usr/bin/env bash
# Installs ghz (the gRPC load generator used by `task load` / `task soak`) into .tools/bin
# (git-ignored), built from its Go module with the local Go toolchain, as infra/k8s/tools/install.sh
# does for its tools: pinned version, no toolchain download, a stamp so that reruns are instant.
#   bash benchmarks/load/install_ghz.sh [--force]
set -euo pipefail

GHZ_VERSION=v0.120.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
stamp="$tools/stamps/ghz@$GHZ_VERSION"
mkdir -p "$tools/bin" "$tools/stamps"
if command -v flock >/dev/null; then  # one installer at a time (shares .tools with infra:tools)
  exec 9>"$tools/.lock"
  flock 9
fi
if [ "${1:-}" != "--force" ] && [ -e "$stamp" ] && [ -x "$tools/bin/ghz" ]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "ghz: Go is required to build ghz $GHZ_VERSION (https://go.dev/dl/); PATH=$PATH" >&2
  exit 1
fi
echo "ghz: building $GHZ_VERSION (one time)"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
(cd "$workdir" && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$tools/bin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
rm -f "$tools/stamps"/ghz@*
touch "$stamp"
