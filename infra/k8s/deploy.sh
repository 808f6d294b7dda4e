#!/usr/bin/env bash
# Applies an overlay (dev or prod) to the current kubectl context (`task infra:deploy OVERLAY=...`):
# pins the images to the digests of the last `PUSH=1 task infra:images` (dist/images.txt) on a copy
# of infra/k8s, renders it with the pinned kustomize, applies it server-side, then waits for the
# Deployments and the RayService. The Secrets it references must exist (infra/k8s/README.md).
set -euo pipefail

overlay="${1:-dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kustomize="$root/.tools/bin/kustomize"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp -r "$root/infra/k8s" "$work/k8s"
if [ -s "$root/dist/images.txt" ]; then
  while read -r image; do
    (cd "$work/k8s/overlays/$overlay" && "$kustomize" edit set image "$image")
  done <"$root/dist/images.txt"
fi
"$kustomize" build "$work/k8s/overlays/$overlay" >"$work/manifests.yaml"
namespace="$(sed -n 's/^namespace: *//p' "$work/k8s/overlays/$overlay/kustomization.yaml")"

kubectl apply --server-side --field-manager=finpredict -f "$work/manifests.yaml"
for deployment in registry monitor gateway; do
  kubectl -n "$namespace" rollout status "deployment/$deployment" --timeout=10m
done
kubectl -n "$namespace" wait rayservice/model-server --for=condition=Ready --timeout=20m
