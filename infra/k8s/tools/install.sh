#!/usr/bin/env bash
# Installs the pinned deployment tool chain into .tools/ (git-ignored), offline afterwards:
#   .tools/bin/kustomize, .tools/bin/actionlint      built from their Go modules (local Go)
#   .tools/schemas/kubernetes/v<K8S>-local-strict/    Kubernetes JSON schemas (kubernetes-validate wheel, sha256-checked)
#   .tools/crds/kuberay-<v>/, .tools/crds/prometheus-operator-<v>/   CRDs from the operators' Go modules
# Versions: infra/k8s/tools/versions.env. Idempotent and quick when everything is in place (a stamp
# per item); `--force` reinstalls. Nothing here is committed: third-party files stay in .tools/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
# shellcheck source=versions.env
source "$root/infra/k8s/tools/versions.env"
tools="$root/.tools"
stamps="$tools/stamps"
force=0
if [ "${1:-}" = "--force" ]; then force=1; fi
mkdir -p "$tools/bin" "$stamps"

# One installer at a time (the test session and a task may start together).
if command -v flock >/dev/null; then
  exec 9>"$tools/.lock"
  flock 9
fi

done_already() { [ "$force" -eq 0 ] && [ -e "$stamps/$1" ]; }
mark() { rm -f "$stamps/${1%%@*}"@*; touch "$stamps/$1"; }

need_go() {
  if ! command -v go >/dev/null; then
    echo "infra tools: Go is required to build $1 (https://go.dev/dl/); PATH=$PATH" >&2
    exit 1
  fi
}

# Go without surprises: no toolchain downloads, module mode, our own GOBIN.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$tools/bin"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

go_install() {  # name module version
  local name="$1" module="$2" version="$3"
  if done_already "$name@$version" && [ -x "$tools/bin/$name" ]; then return; fi
  need_go "$name"
  echo "infra tools: building $name $version (one time)"
  (cd "$workdir" && go install "$module@$version")
  mark "$name@$version"
}

go_module_dir() {  # module version -> prints the unpacked module folder
  (cd "$workdir" && go mod download -json "$1@$2") | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])'
}

crds() {  # name module version subdir
  local name="$1" module="$2" version="$3" sub="$4" dest="$tools/crds/$1-$3"
  if done_already "crds-$name@$version" && [ -d "$dest" ]; then return; fi
  need_go "the $name CRDs"
  echo "infra tools: fetching the $name $version CRDs"
  local dir
  dir="$(go_module_dir "$module" "$version")"
  rm -rf "$dest" && mkdir -p "$dest"
  cp "$dir/$sub"/*.yaml "$dest/"
  chmod -R u+w "$dest"
  mark "crds-$name@$version"
}

kubernetes_schemas() {
  local wanted="v$KUBERNETES_VERSION-local-strict" dest="$tools/schemas/kubernetes"
  if done_already "k8s-schemas@$KUBERNETES_VERSION-$KUBERNETES_VALIDATE_VERSION" && [ -d "$dest/$wanted" ]; then
    return
  fi
  echo "infra tools: fetching the Kubernetes $KUBERNETES_VERSION schemas (kubernetes-validate $KUBERNETES_VALIDATE_VERSION)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" -d "$workdir/wheel"
  python3 - "$workdir/wheel" "$KUBERNETES_VALIDATE_SHA256" "$wanted" "$dest" <<'PY'
import hashlib, pathlib, shutil, sys, zipfile
wheel_dir, sha, wanted, dest = sys.argv[1:]
(wheel,) = pathlib.Path(wheel_dir).glob("*.whl")
got = hashlib.sha256(wheel.read_bytes()).hexdigest()
if got != sha:
    sys.exit(f"{wheel.name}: sha256 {got}, expected {sha}")
prefix = f"kubernetes_validate/kubernetes-json-schema/{wanted}/"
out = pathlib.Path(dest) / wanted
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names:
        sys.exit(f"{wheel.name} has no schemas for {wanted}")
    for name in names:
        (out / name.removeprefix(prefix)).write_bytes(zf.read(name))
PY
  mark "k8s-schemas@$KUBERNETES_VERSION-$KUBERNETES_VALIDATE_VERSION"
}

go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
go_install actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"
crds kuberay github.com/ray-project/kuberay/ray-operator "$KUBERAY_VERSION" config/crd/bases
crds prometheus-operator github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd
kubernetes_schemas
