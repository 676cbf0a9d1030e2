#!/usr/bin/env bash
# Builds helm v3 from its Go module at a pinned release and caches it outside the repository, keyed
# by version; prints the binary's path. Concurrent callers serialise on a lock and the second one
# finds the finished binary.
set -euo pipefail
version="${HELM_VERSION:-v3.19.5}"
# HOME may be unset in CI-like environments; fall back to the account database.
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache="${KUBE_LVS_CACHE:-$home/.cache/kube-lvs}"
out="$cache/bin/helm-$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache/bin"
exec 9>"$cache/bin/.helm-$version.lock"
flock 9
if [ -x "$out" ]; then echo "$out"; exit 0; fi
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
# helm reports its version from a variable set at link time
CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  "helm.sh/helm/v3/cmd/helm@$version" >&2
mv "$gobin/helm" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
